"""The quality harness's models and measuring tools, shared by scripts/quality.py, the demo,
scripts/train_tiny_dit.py and the tests (issue 11: the harness models are project code).

Why a package module inside ``fp8stream/`` rather than under ``tests/``: the demo
(``scripts/demo.sh``) runs an installed fp8stream without the test tree. Nothing in the tool
imports it (it needs diffusers, transformers, scikit-learn and comfy-kitchen: the ``test`` /
``demo`` extras), and it imports nothing from the tool but constants.

Split by job, one module per model family, so a new family is one new module:

* ``fp8``: FP8 maths: quantize a weight, ComfyUI's FP8 linear through comfy-kitchen, SQNR,
  one layer judged on its recorded inputs, a whole model run with FP8 linears;
* ``checkpoint``: write a model's linears as a ComfyUI mixed-precision FP8 file, read it back;
* ``record``: every linear's full input over a run;
* ``names``: fused ComfyUI layers <-> the diffusers linears they are made of;
* ``digits``: the training data (scikit-learn's 8x8 digits as 16 tokens) and the class
  conditioning that stands in for text encoders;
* ``flux``, ``sd3``, ``wan``: one DiT family each (config, ComfyUI names, forward);
* ``dit``: what is common to the tiny DiTs: load, sample, loss, FP8 end to end;
* ``rescale``: function-preserving rescalings (uniform k, split halves, outlier channels);
* ``minilm``: all-MiniLM-L6-v2 and its sentences.

Nothing here downloads anything: models run offline (``HF_HUB_OFFLINE=1`` is set on import of
``minilm``).
"""
