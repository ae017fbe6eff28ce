"""makemore: train a character-level language model on a list of items and make more of them."""
import warnings

__version__ = "0.1.0"

# torch warns on import when NumPy is absent; makemore never hands tensors to NumPy, so NumPy is not
# a dependency and the warning would only be noise on every command.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
