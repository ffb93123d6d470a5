#!/usr/bin/env bash
# The torch device's tests under torch releases other than the suite's own (2.13.0): the
# device needs torch 2.10 or newer (webgpu_llm.torch.MIN_TORCH) and must work on 2.11 to 2.13.
# Each release gets a virtual environment that sees this machine's packages (webgpu_llm,
# transformers, wgpu, wgpudawn) but has its own torch (PyPI's build: a few GB with its CUDA
# libraries, which the CPU-only tests do not use).
#   scripts/test-torch-versions.sh                  # 2.10.0, the oldest supported
#   scripts/test-torch-versions.sh 2.10.0 2.11.0    # several (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
for v in "${@:-2.10.0}"; do
  venv=".venv-torch-$v"
  [ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
  # When this runs inside a virtual environment (as .ci/run does), --system-site-packages
  # reaches the base interpreter's packages, not that environment's: add the calling
  # environment's site-packages (with its .pth files, for the editable webgpu_llm) after the
  # new environment's own, so that its torch comes first.
  python - "$venv" <<'PY'
import subprocess, sys, sysconfig
inner = subprocess.run([sys.argv[1] + "/bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
outer = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
with open(f"{inner}/calling-environment.pth", "w") as f:
    f.writelines(f"import site; site.addsitedir({d!r})\n" for d in sorted(outer))
PY
  "$venv/bin/pip" install -q "torch==$v"
  "$venv/bin/python" -c "import sys, torch; v = torch.__version__.split('+')[0]; sys.exit(None if v == '$v' else f'got torch {v}, wanted $v')"
  echo "torch $v:"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/torch/
done
