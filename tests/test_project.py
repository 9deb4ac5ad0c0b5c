"""The README's commands are what CI runs, and the project installs what it imports."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_blocks():
    readme = (ROOT / "README.md").read_text()
    for name in ("setup", "test"):
        block = re.search(
            rf"<!-- ci:{name} -->\n```bash\n(.+?)\n```\n<!-- /ci:{name} -->", readme, re.S
        )
        assert block, f"README.md lacks the ci:{name} block"
        extracted = subprocess.run(
            ["bash", "-c", f"source <(sed -n '/^block()/,/^}}/p' .ci/run); block {name}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert extracted == block.group(1).strip()


def test_constraints_pin_torch_and_the_boto_pair():
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["boto3"] == pins["botocore"]
