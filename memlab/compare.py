"""``python -m memlab compare`` (placeholder, being written)."""


def add_arguments(parser):
    pass


def run(args):
    print("compare: not yet")
