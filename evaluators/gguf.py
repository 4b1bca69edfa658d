"""GGUF checkpoints as ordinary `transformers` folders, converted once and cached.

`transformers` reads a GGUF file (`from_pretrained(folder, gguf_file=...)`) by dequantizing every
tensor to float32, which takes about a minute on a small CPU. The result is saved as safetensors,
config and tokenizer under the cache folder, so every later load is a plain folder load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def converted_folder(gguf: Path, cache_dir: Path) -> Path:
    """The cached `transformers` folder of a GGUF file, converting it on the first call.

    The folder is keyed by the file's name and size and written atomically (a temporary folder
    renamed into place), so an interrupted or concurrent conversion never leaves half a model.
    Converting needs the packages `gguf` and `accelerate`.
    """
    key = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    folder = Path(cache_dir).expanduser() / "models" / f"{gguf.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers as tf

    logger.info("converting %s to float32 safetensors in %s (once)", gguf.name, folder)
    model = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain float32 now; without this `save_pretrained` refuses a "quantized" model.
    model.hf_quantizer = None  # type: ignore[assignment]
    del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: its folder is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
