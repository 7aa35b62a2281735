"""Taking a model to deployment: checkpoint conversion, export (ONNX, TorchScript, torch.export) and prediction."""

from .convert import convert, load_model
from .export import ExportCheckError, export
from .predict import predict

__all__ = ["ExportCheckError", "convert", "export", "load_model", "predict"]
