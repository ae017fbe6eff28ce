"""makemore: train a character-level language model on a list of items and make more of them."""
__version__ = "0.1.0"
