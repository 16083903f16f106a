__version__ = "0.1.0"

from pathlib import Path as _Path
_book_model = _Path(__file__).parent / 'assets' / 'book_model'
BOOK_MODEL = str(_book_model) if (_book_model / 'model_index.json').is_file() else None  # chapter 13's model (a diffusers folder), once the package ships it
