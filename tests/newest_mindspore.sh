#!/usr/bin/env bash
# The smoke subset on the newest MindSpore that setup.py admits (2.10.0), in a venv of its own beside .venv:
# every model builds and runs (also under a faked Atlas A2 SoC), the CPU accelerator equals the plain models, N steps per call equal N single steps, train ->
# validate -> resume on a small folder, EMA, the 2-rank msrun run, ONNX export, and the command lines. The full suite runs on constraints.txt's pins.
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv-ms2.10
. .venv-ms2.10/bin/activate
pip install -q -e ".[test]" "mindspore==2.10.0"
python -c "import mindspore, numpy; print('smoke subset on mindspore', mindspore.__version__, 'numpy', numpy.__version__)"
python -m pytest -q -n 2 --dist loadfile \
    tests/test_models.py::test_every_model_forward_small \
    tests/test_step.py \
    tests/test_accel.py::test_accelerated_network_equals_plain \
    tests/test_accel.py::test_v2_runs_its_fused_paths \
    tests/test_train.py::test_validate_reads_the_checkpoint_back \
    tests/test_train.py::test_resume_continues_exactly \
    tests/test_train.py::test_ema_run_resumes_exactly \
    tests/test_train.py::test_ema_run_saves_and_validates_the_averaged_weights \
    tests/test_ascend_build.py \
    tests/test_distributed.py::test_msrun_two_ranks_disjoint_data_identical_weights \
    tests/test_export.py::test_onnx_matches_mindspore \
    tests/test_cli.py
