"""A real Tomcat 10 for the differential tests: its own CATALINA_BASE in a temp dir, the probe
webapp (webapp/ProbeServlet.java, compiled here with javac) at the root and at /jira, one HTTP
connector on a free port, shutdown port -1, stopped by pid (also when a test fails).

Needs Debian's tomcat10, a JDK (javac) and libjackson2-databind-java: `make tomcat-deps`
(scripts/ensure-tomcat.sh) installs them. A missing piece raises TomcatError, which the fixture
turns into a failure naming what to run (never a skip).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CATALINA_HOME = os.environ.get("CATALINA_HOME", "/usr/share/tomcat10")
TOMCAT_CONF = os.environ.get("TOMCAT_CONF", "/etc/tomcat10")
JAVA_DIR = "/usr/share/java"
JACKSON = ("jackson-databind.jar", "jackson-core.jar", "jackson-annotations.jar")
CONTEXTS = ("ROOT", "jira")  # webapps: "" (the root) and "/jira"

SERVER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" connectionTimeout="20000"
               maxThreads="{threads}" maxKeepAliveRequests="-1" maxParameterCount="1000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"""

LOGGING = """handlers = java.util.logging.FileHandler
.level = WARNING
java.util.logging.FileHandler.pattern = {base}/logs/tomcat.log
java.util.logging.FileHandler.formatter = java.util.logging.SimpleFormatter
"""


class TomcatError(Exception):
    pass


INSTALL_HINT = "run `make tomcat-deps` (scripts/ensure-tomcat.sh: apt-get install tomcat10 default-jdk-headless libjackson2-databind-java)"


def requirements() -> dict:
    """Paths of what the tests need; raises TomcatError naming what is missing and what to run."""
    javac = shutil.which("javac")
    java = shutil.which("java")
    catalina = os.path.join(CATALINA_HOME, "bin", "catalina.sh")
    servlet_api = os.path.join(CATALINA_HOME, "lib", "servlet-api.jar")
    jars = [os.path.join(JAVA_DIR, j) for j in JACKSON]
    missing = [p for p in [catalina, servlet_api, *jars] if not os.path.isfile(p)]
    if not javac:
        missing.append("javac")
    if not java:
        missing.append("java")
    if missing:
        raise TomcatError(f"missing {', '.join(missing)}: {INSTALL_HINT}")
    return {"javac": javac, "catalina": catalina, "servlet_api": servlet_api, "jackson": jars}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class Tomcat:
    def __init__(self, base: str, threads: int = 64):
        self.base = base
        self.threads = threads
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def build(self) -> None:
        req = requirements()
        b = self.base
        for d in ("conf", "logs", "temp", "work", "webapps", "classes"):
            os.makedirs(os.path.join(b, d), exist_ok=True)
        for name in ("web.xml", "catalina.properties", "context.xml"):
            src = os.path.join(TOMCAT_CONF, name)
            if not os.path.isfile(src):
                src = os.path.join(CATALINA_HOME, "conf", name)
            if os.path.isfile(src):
                shutil.copy(src, os.path.join(b, "conf", name))
        if not os.path.isfile(os.path.join(b, "conf", "web.xml")):
            raise TomcatError(f"no Tomcat conf/web.xml under {TOMCAT_CONF}: {INSTALL_HINT}")
        with open(os.path.join(b, "conf", "server.xml"), "w") as f:
            f.write(SERVER_XML.format(port=self.port, threads=self.threads))
        with open(os.path.join(b, "conf", "logging.properties"), "w") as f:
            f.write(LOGGING.format(base=b))
        classes = os.path.join(b, "classes")
        cp = ":".join([req["servlet_api"], *req["jackson"]])
        r = subprocess.run([req["javac"], "-d", classes, "-cp", cp, "--release", "11",
                            os.path.join(HERE, "webapp", "ProbeServlet.java")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise TomcatError(f"javac failed:\n{r.stdout}\n{r.stderr}")
        for ctx in CONTEXTS:
            web_inf = os.path.join(b, "webapps", ctx, "WEB-INF")
            os.makedirs(os.path.join(web_inf, "lib"), exist_ok=True)
            shutil.copy(os.path.join(HERE, "webapp", "web.xml"), os.path.join(web_inf, "web.xml"))
            shutil.copytree(classes, os.path.join(web_inf, "classes"), dirs_exist_ok=True)
            for jar in req["jackson"]:
                # real files, not Debian's symlinks: the webapp class loader reads them
                shutil.copy(os.path.realpath(jar), os.path.join(web_inf, "lib", os.path.basename(jar)))

    def start(self, timeout: float = 60.0) -> "Tomcat":
        self.build()
        env = dict(os.environ, CATALINA_HOME=CATALINA_HOME, CATALINA_BASE=self.base,
                   CATALINA_TMPDIR=os.path.join(self.base, "temp"),
                   CATALINA_OPTS="-Xss1m -XX:+UseSerialGC -Xshare:auto -XX:TieredStopAtLevel=1",
                   CATALINA_PID=os.path.join(self.base, "tomcat.pid"))
        self._out = open(os.path.join(self.base, "logs", "catalina.out"), "wb")
        # `catalina.sh run` execs java in the foreground: its pid is the JVM's.
        self.proc = subprocess.Popen([requirements()["catalina"], "run"], env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent, cwd=self.base)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TomcatError(f"Tomcat exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                ok = all(self.get(p).get("probe") for p in ("/rest/ready", "/jira/rest/ready"))
                if ok:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TomcatError(f"Tomcat not ready after {timeout}s:\n{self.log()[-4000:]}")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
            return json.loads(r.read())

    def log(self) -> str:
        out = []
        for p in sorted(glob.glob(os.path.join(self.base, "logs", "*"))):
            try:
                with open(p, "rb") as f:
                    out.append(f"== {p}\n" + f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self, timeout: float = 10.0) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout)
            except ProcessLookupError:
                pass
        fh = getattr(self, "_out", None)
        if fh is not None and not fh.closed:
            fh.close()
