"""Gates beyond accuracy, F1 and noise: transferability, robustness, regression (one module each)."""
