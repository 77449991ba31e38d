"""A real Orthanc PACS node on loopback, for the tests and the demo.

Orthanc comes from Debian (packages ``orthanc`` and ``orthanc-dicomweb``, installed by ``make
install``). :class:`OrthancNode` writes a configuration of its own (temporary storage, the
DICOMweb plugin on, HTTP authentication on, remote access off, free loopback ports), starts the
server, waits until its REST API answers an authenticated request, and stops it cleanly.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aln.serving.server import LocalService, free_port

ORTHANC = Path("/usr/sbin/Orthanc")
"""The server binary (Debian's ``orthanc``; found on ``PATH`` first)."""
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
"""The DICOMweb plugin (Debian's ``orthanc-dicomweb``)."""
DICOMWEB_ROOT = "/dicom-web/"


def binary() -> str | None:
    """The Orthanc server binary, or None when it is not installed."""
    found = shutil.which(ORTHANC.name)
    return found or (str(ORTHANC) if ORTHANC.exists() else None)


def installed() -> bool:
    """Whether Orthanc and its DICOMweb plugin are both installed."""
    return binary() is not None and DICOMWEB_PLUGIN.exists()


class OrthancError(RuntimeError):
    """Orthanc is not installed, or did not start (its log's last lines are in the message)."""


@dataclass
class OrthancNode(LocalService):
    """An Orthanc server on loopback with a generated configuration.

    Attributes:
        http_port: REST and DICOMweb port (a free one when 0).
        dicom_port: DIMSE port (a free one when 0): C-STORE to ``aet`` here.
        aet: The node's application entity title.
        stable_age_s: Seconds without a new instance before a study is "stable" (``/changes``).
        username: HTTP user (generated).
        password: HTTP password (generated).
    """

    http_port: int = 0
    dicom_port: int = 0
    aet: str = "ALNORTHANC"
    stable_age_s: int = 2
    username: str = "aln"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    LOG = "orthanc.log"
    STOP_SIGNAL = signal.SIGTERM
    STOP_TIMEOUT_S = 20.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _work: Path | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service's base URL."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def explorer_url(self) -> str:
        """Orthanc's own web interface (Orthanc Explorer), where stored SRs can be opened."""
        return self.url + "/app/explorer.html"

    @property
    def auth_header(self) -> str:
        """The ``Authorization`` header value of the configured user."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def configuration(self, storage: Path) -> dict[str, object]:
        """The Orthanc configuration this node runs with."""
        return {
            "Name": "aln-orthanc",
            "StorageDirectory": str(storage / "storage"),
            "IndexDirectory": str(storage / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "StableAge": self.stable_age_s,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": True},
            "HttpTimeout": 60,
        }

    def start(self, timeout_s: float = 60.0) -> OrthancNode:
        """Start the server and wait until it answers.

        Raises:
            OrthancError: Orthanc or its DICOMweb plugin is not installed, or it did not answer
                within ``timeout_s``.
        """
        server = binary()
        if server is None:
            raise OrthancError(
                "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb "
                "(make install does it)"
            )
        if not DICOMWEB_PLUGIN.exists():
            raise OrthancError(
                f"The DICOMweb plugin {DICOMWEB_PLUGIN} is missing: apt-get "
                "install orthanc-dicomweb"
            )
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        self._work = Path(tempfile.mkdtemp(prefix="aln-orthanc-"))
        config = self._work / "orthanc.json"
        config.write_text(json.dumps(self.configuration(self._work), indent=2))
        log = (self._work / "orthanc.log").open("wb")
        self._process = subprocess.Popen(
            [server, str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise OrthancError(f"Orthanc exited at start: {self.log_tail()}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        raise OrthancError(f"Orthanc did not answer within {timeout_s:.0f} s: {self.log_tail()}")

    def get(self, path: str) -> object:
        """An authenticated GET of the REST API, as parsed JSON."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": self.auth_header}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
