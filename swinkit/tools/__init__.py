"""Tools around the library: the benchmark against timm, torchvision and HF, and the peers it compares with."""
