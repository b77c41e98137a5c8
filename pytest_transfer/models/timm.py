"""placeholder"""
def load_timm(*a, **k):
    raise NotImplementedError
