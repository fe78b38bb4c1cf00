"""The zoo's net names without torch: the CLI lists them in `--help` before it imports anything
heavy. models/zoo.py registers exactly these, in this order (its ZOO refuses to build otherwise)."""

ZOO_NAMES = ("convnetjs-cifar", "convnetjs-mnist", "tiny-vgg", "zfnet-small", "resnet18-shaped")


def zoo_names() -> list[str]:
    """The zoo's net names, in registry order."""
    return list(ZOO_NAMES)
