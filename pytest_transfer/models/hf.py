"""placeholder"""
def load_hf(*a, **k):
    raise NotImplementedError
