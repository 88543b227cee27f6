"""The machine a kit is for: its Python (major.minor) and its wheel platform, and what that means to pip,
to environment markers and to extension modules."""
import platform
import re
import sys
from dataclasses import dataclass

LEGACY = {"2014": 17, "2010": 12, "1": 5}  # manylinux2014 = manylinux_2_17, ...


@dataclass(frozen=True)
class Target:
    python: str = "3.12"                     # major.minor
    platform: str = "manylinux_2_28_x86_64"  # DALI's own tag: pip also accepts the older manylinux tags

    @property
    def tag(self) -> str:
        """The CPython tag, "cp312": a wheel's interpreter and ABI, and an extension module's suffix."""
        return "cp" + self.python.replace(".", "")

    @property
    def machine(self) -> str:
        """x86_64 of manylinux_2_28_x86_64 (or of manylinux2014_x86_64)."""
        return re.sub(r"^manylinux(_\d+_\d+|\d+)_", "", self.platform)

    def pip_flags(self) -> list:
        """pip counts older manylinux_2_Y tags as compatible with the one given, but not the legacy
        names of the same tags (manylinux2014 is manylinux_2_17): those are passed too."""
        glibc = re.match(r"manylinux_2_(\d+)_", self.platform)
        legacy = [f"manylinux{year}_{self.machine}" for year, minor in LEGACY.items()
                  if glibc and int(glibc.group(1)) >= minor]
        platforms = [flag for p in [self.platform, *legacy] for flag in ("--platform", p)]
        return [*platforms, "--python-version", self.python, "--implementation", "cp", "--abi", self.tag]

    def markers(self) -> dict:
        """The environment markers (PEP 508) of the target, for Requires-Dist lines such as
        `pyyaml>=5.2; python_version < "3.13"`."""
        return dict(python_version=self.python, python_full_version=f"{self.python}.0", os_name="posix",
                    sys_platform="linux", platform_system="Linux", platform_machine=self.machine,
                    implementation_name="cpython", platform_python_implementation="CPython",
                    implementation_version=f"{self.python}.0", platform_release="", platform_version="")

    @classmethod
    def running(cls) -> "Target":
        """This interpreter (a kit built from its installed packages, as the tests do)."""
        return cls(f"{sys.version_info.major}.{sys.version_info.minor}",
                   f"manylinux_2_28_{platform.machine()}")
