"""The tokens evaluations run on: text sources (`corpus`) and the calibration and held-out
token blocks with the minibatches drawn from them (`tokens`)."""

from ..sources import text_file_documents
from .corpus import dataset_documents, documents, stdlib_docstrings
from .tokens import Batch, TokenData

__all__ = ["Batch", "TokenData", "dataset_documents", "documents", "stdlib_docstrings", "text_file_documents"]
