"""The PyTorch side: multi-exit networks, joint training, cost profiling, early-exit inference.

Needs only torch and skorch; the transformer helpers need the ``text`` extra
(``transformers`` and the packaged MiniLM model).
"""

from ._architectures import multi_exit_cnn
from ._encoder import load_encoder, multi_exit_encoder, packaged_minilm_path, tokenize
from ._heads import PoolLinearHead, TokenPoolingHead
from ._inference import EarlyExitResult, early_exit_predict, time_full_network
from ._model import MultiExitNetwork
from ._profiling import count_flops, measure_latency
from ._training import DepthWeightedLoss, MultiExitClassifier

__all__ = [
    "DepthWeightedLoss",
    "EarlyExitResult",
    "MultiExitClassifier",
    "MultiExitNetwork",
    "PoolLinearHead",
    "TokenPoolingHead",
    "count_flops",
    "early_exit_predict",
    "load_encoder",
    "measure_latency",
    "multi_exit_cnn",
    "multi_exit_encoder",
    "packaged_minilm_path",
    "time_full_network",
    "tokenize",
]
