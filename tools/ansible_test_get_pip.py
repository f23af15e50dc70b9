"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads from ci-files.testing.ansible.com.

ansible-test creates its sanity virtual environments without pip and bootstraps pip by running a
cached ``~/.ansible/test/cache/get_pip_<version>.py`` with pip's install options and the packages to
install (``pip==<version>``, setuptools, wheel). That host is not reachable from our build machines,
but PyPI is: this script does the same with the pip that ships with CPython (``ensurepip``), then
lets that pip install the requested packages from PyPI. ``make sanity`` copies it into the cache
under the name the running ansible-test asks for.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys


def main() -> int:
    # ensurepip turns pip's configuration off in this process's environment (PIP_CONFIG_FILE=/dev/null);
    # the install below must see the site's pip configuration (index, CA bundle) as any pip would.
    env = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    # get-pip.py's own switches: pip install has no such options.
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args], env=env)


if __name__ == "__main__":
    sys.exit(main())
