"""deploy.probe: the node probe run for real with sh (this Linux machine, a machine without Python,
macOS's code path with stand-in tools), and the pure parsing, checks and preflight table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.probe import (
    PROBE_SCRIPT,
    NodeProbe,
    PreflightError,
    check_node,
    parse_probe,
    preflight_table,
    require_preflight,
)
from node.interfaces import local_interfaces
from node.sysinfo import total_memory_bytes
from tests.system_tools import require_program

BASIC_TOOLS = ("sh", "uname", "awk", "df", "id", "hostname", "readlink")


def run_probe(env: dict[str, str], sh: str = "sh") -> str:
    done = subprocess.run([sh, "-s"], input=PROBE_SCRIPT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert done.stderr == ""
    return done.stdout


def by_check(findings) -> dict:
    return {f.check: f for f in findings}


def tool_dir(path: Path, tools=BASIC_TOOLS, **renamed: str) -> Path:
    """A directory of symlinks to real tools; `renamed` maps a link name to another tool."""
    path.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        real = shutil.which(renamed.get(tool, tool))
        if real:
            (path / tool).symlink_to(real)
    return path


def write_tool(directory: Path, name: str, body: str) -> None:
    script = directory / name
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)


# --- this machine ---------------------------------------------------------------


def test_probe_of_this_machine(tmp_path):
    install = tmp_path / "not" / "yet" / "there"
    out = run_probe(dict(os.environ, BOLTPIPE_PYTHON=sys.executable, BOLTPIPE_INSTALL_DIR=str(install)))
    probe = parse_probe(out)
    assert probe.complete and probe.os == "Linux" and probe.arch
    assert probe.mem_total_bytes == pytest.approx(total_memory_bytes(), rel=0.02)
    assert probe.python_version == tuple(sys.version_info[:3])
    assert os.path.samefile(probe.python_path, sys.executable)
    assert probe.python_venv is True
    assert probe.disk_path == str(tmp_path) and probe.disk_free_bytes > 0
    assert probe.metal is None and probe.ane is False
    # The probe's link kinds agree with what a worker here would advertise.
    probed = {(i.name, i.address): i.kind for i in probe.interfaces()}
    for iface in local_interfaces():
        assert probed.get((iface.name, iface.address)) == iface.kind
    findings = check_node(probe)
    assert not [f for f in findings if f.fatal], findings
    assert by_check(findings)["python"].ok and by_check(findings)["disk"].ok
    assert by_check(findings)["thunderbolt"].status == "warn"  # no Thunderbolt in this machine


def test_probe_with_bsd_awk(tmp_path):
    """macOS's awk is the original one (BWK); its Debian package is used here when installed."""
    require_program("original-awk", "original-awk")
    bin_dir = tool_dir(tmp_path / "bin", ("awk",), awk="original-awk")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", BOLTPIPE_PYTHON=sys.executable)
    probe = parse_probe(run_probe(env))
    reference = parse_probe(run_probe(dict(os.environ, BOLTPIPE_PYTHON=sys.executable)))
    assert probe.complete and probe.mem_total_bytes == reference.mem_total_bytes
    assert probe.addresses == reference.addresses and probe.netifs == reference.netifs
    assert probe.disk_free_bytes > 0 and probe.cpu == reference.cpu


def test_named_interpreter_that_does_not_exist(tmp_path):
    out = run_probe(dict(os.environ, BOLTPIPE_PYTHON=str(tmp_path / "python3.12"), BOLTPIPE_INSTALL_DIR=str(tmp_path)))
    probe = parse_probe(out)
    assert probe.complete and probe.python_version is None and probe.python_error == "not found"
    python = by_check(check_node(probe))["python"]
    assert python.fatal and "install Python 3.11+" in python.hint and "python3.12" in python.found


def test_machine_without_python(tmp_path):
    bin_dir = tool_dir(tmp_path / "bin")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "BOLTPIPE_INSTALL_DIR": "~/.boltpipe"}
    probe = parse_probe(run_probe(env, sh=str(bin_dir / "sh")))
    assert probe.complete and probe.os == "Linux"
    assert probe.python_requested == "python3" and probe.python_path is None and probe.python_error == "not found"
    assert probe.install_dir == f"{tmp_path}/.boltpipe" and probe.disk_path == str(tmp_path)
    assert probe.mem_total_bytes > 0 and probe.disk_free_bytes > 0
    findings = check_node(probe)
    fatal = [f for f in findings if f.fatal]
    assert [f.check for f in fatal] == ["python"]
    assert "install Python 3.11+" in fatal[0].hint and "apt install python3" in fatal[0].hint
    assert "python: expected Python 3.11+, found python3: not found" in fatal[0].sentence()


@pytest.mark.parametrize("venv_ok", [True, False])
def test_old_python_and_python_without_venv(tmp_path, venv_ok):
    bin_dir = tool_dir(tmp_path / "bin")
    write_tool(bin_dir, "python3", 'case "$2" in *version_info*) echo 3.9.6 ;; *) exit 0 ;; esac')
    write_tool(bin_dir, "python3.12",
               'case "$2" in *version_info*) echo 3.12.3 ;; *venv*) exit %d ;; esac' % (0 if venv_ok else 1))
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    old = by_check(check_node(parse_probe(run_probe(env, sh=str(bin_dir / "sh")))))["python"]
    assert old.fatal and old.found == f"3.9.6 at {bin_dir}/python3" and old.expected == "Python 3.11+"
    probe = parse_probe(run_probe(dict(env, BOLTPIPE_PYTHON="python3.12"), sh=str(bin_dir / "sh")))
    assert probe.python_version == (3, 12, 3) and probe.python_venv is venv_ok
    checks = by_check(check_node(probe))
    assert checks["python"].ok and checks["venv"].fatal is (not venv_ok)
    if not venv_ok:
        assert "sudo apt install python3-venv" in checks["venv"].hint and "python3.12-venv" in checks["venv"].hint


# --- macOS's code path, with stand-in tools ---------------------------------------

MAC_IFCONFIG = """\
lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384
\tinet 127.0.0.1 netmask 0xff000000
\tinet6 ::1 prefixlen 128
\tinet6 fe80::1%lo0 prefixlen 64 scopeid 0x1
en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tether 3c:a6:f6:12:34:56
\tinet6 fe80::1c2b:3d4e:5f60:7182%en0 prefixlen 64 secured scopeid 0x4
\tinet 192.168.1.23 netmask 0xffffff00 broadcast 192.168.1.255
\tstatus: active
en1: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tstatus: inactive
en2: flags=8963<UP,BROADCAST,SMART,RUNNING,PROMISC,SIMPLEX,MULTICAST> mtu 1500
\tmedia: autoselect <full-duplex>
\tstatus: active
en3: flags=8963<UP,BROADCAST,SMART,RUNNING,PROMISC,SIMPLEX,MULTICAST> mtu 1500
\tstatus: inactive
bridge0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tmember: en2 flags=3<LEARNING,DISCOVER>
\t        ifmaxaddr 0 port 6 priority 0 path cost 0
\tmember: en3 flags=3<LEARNING,DISCOVER>
\tinet 10.10.0.1 netmask 0xffffff00 broadcast 10.10.0.255
\tinet6 fe80::30f:a3ff:fe11:2200%bridge0 prefixlen 64 scopeid 0x9
\tstatus: active
"""

MAC_PORTS = """
Hardware Port: Ethernet
Device: en0
Ethernet Address: 3c:a6:f6:12:34:56

Hardware Port: Thunderbolt Bridge
Device: bridge0
Ethernet Address: 36:0f:a3:11:22:00

Hardware Port: Wi-Fi
Device: en1
Ethernet Address: 3c:a6:f6:12:34:57

Hardware Port: Thunderbolt 1
Device: en2
Ethernet Address: 36:0f:a3:11:22:01

Hardware Port: Thunderbolt 2
Device: en3
Ethernet Address: 36:0f:a3:11:22:02

VLAN Configurations
===================
"""

MAC_DISPLAYS = """Graphics/Displays:

    Apple M4:

      Chipset Model: Apple M4
      Type: GPU
      Bus: Built-In
      Total Number of Cores: 10
      Vendor: Apple (0x106b)
      Metal Support: Metal 3
"""


def fake_mac(bin_dir: Path) -> None:
    """Stand-ins for the macOS tools the probe calls, answering like a Mac mini M4 with 16 GB."""
    data = bin_dir.parent / "data"
    data.mkdir()
    (data / "ifconfig").write_text(MAC_IFCONFIG)
    (data / "ports").write_text(MAC_PORTS)
    (data / "displays").write_text(MAC_DISPLAYS)
    write_tool(bin_dir, "uname", 'case "$1" in -s) echo Darwin ;; -m) echo arm64 ;; *) echo 24.1.0 ;; esac')
    write_tool(bin_dir, "sw_vers", "echo 15.1")
    write_tool(bin_dir, "sysctl", """case "$2" in
machdep.cpu.brand_string) echo 'Apple M4' ;;
hw.memsize) echo 17179869184 ;;
hw.optional.arm64) echo 1 ;;
iogpu.wired_limit_mb) echo 0 ;;
*) echo "sysctl: unknown oid '$2'" >&2; exit 1 ;;
esac""")
    write_tool(bin_dir, "system_profiler", f'exec awk 1 "{data}/displays"')
    write_tool(bin_dir, "ioreg", "echo '+-o ane0  <class AppleH11ANEInterface, id 0x1000002a5, registered>'")
    write_tool(bin_dir, "networksetup", f'exec awk 1 "{data}/ports"')
    write_tool(bin_dir, "ifconfig", f'exec awk 1 "{data}/ifconfig"')
    # launchctl reads its stdin here, as some tools do: it must not eat the rest of the script.
    write_tool(bin_dir, "launchctl", 'while read -r _; do :; done; case "$2" in gui/*) exit 0 ;; *) exit 113 ;; esac')
    write_tool(bin_dir, "id", 'case "$1" in -u) echo 501 ;; *) echo alice ;; esac')
    write_tool(bin_dir, "hostname", "echo mini1.local")
    write_tool(bin_dir, "python3", 'case "$2" in *version_info*) echo 3.12.7 ;; *) exit 0 ;; esac')


# macOS's sh is bash in POSIX mode and its awk the original one (Debian's original-awk).
@pytest.mark.parametrize("shell,awk", [("dash", "awk"), ("bash", "original-awk")])
def test_macos_code_path_with_stand_in_tools(tmp_path, shell, awk):
    for tool in (shell, awk):
        require_program(tool, {"awk": "mawk"}.get(tool, tool))
    bin_dir = tool_dir(tmp_path / "bin", ("sh", "awk", "df"), sh=shell, awk=awk)
    fake_mac(bin_dir)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    probe = parse_probe(run_probe(env, sh=str(bin_dir / "sh")))
    assert (probe.os, probe.os_label, probe.arch, probe.cpu) == ("Darwin", "macOS 15.1", "arm64", "Apple M4")
    assert (probe.hostname, probe.user, probe.mem_total_bytes) == ("mini1.local", "alice", 16 * 1024**3)
    assert probe.metal == "Metal 3" and probe.ane is True and probe.wired_limit_mb == 0 and probe.launchd == "gui"
    assert probe.hardware_ports["bridge0"] == "Thunderbolt Bridge" and probe.hardware_ports["en1"] == "Wi-Fi"
    assert probe.python_version == (3, 12, 7)
    kinds = {(i.name, i.address, i.prefix_len): i.kind for i in probe.interfaces()}
    assert kinds == {
        ("lo0", "127.0.0.1", 8): "loopback", ("lo0", "::1", 128): "loopback",
        ("en0", "192.168.1.23", 24): "ethernet", ("bridge0", "10.10.0.1", 24): "thunderbolt",
    }
    assert probe.thunderbolt_ports() == ["bridge0", "en2", "en3"]
    findings = by_check(check_node(probe))
    assert findings["thunderbolt"].ok and findings["thunderbolt"].found == "bridge0 10.10.0.1/24"
    assert not [f for f in findings.values() if f.fatal]


# --- hand-written probe outputs ----------------------------------------------------

MAC_MINI_M4 = """\
Last login: Mon Nov 23 06:00:01 2026 from 10.10.0.2
probe_version=1
os=Darwin
arch=arm64
hostname=mini2.local
user=alice
os_version=15.1
cpu=Apple M4
mem_total_bytes=17179869184
metal=Metal 3
ane=yes
wired_limit_mb=0
hwport=en0 Ethernet
hwport=bridge0 Thunderbolt Bridge
hwport=en1 Wi-Fi
hwport=en2 Thunderbolt 1
hwport=en3 Thunderbolt 2
hwport=en4 Thunderbolt 3
addr=lo0 inet 127.0.0.1/8
addr=lo0 inet6 ::1/128
addr=lo0 inet6 fe80::1/64
addr=en0 inet6 fe80::1c2b:3d4e:5f60:7182/64
addr=en0 inet 192.168.1.24/24
netif=en0 status=active
netif=en1 status=inactive
netif=en2 status=active
netif=en3 status=inactive
netif=en4 status=inactive
addr=bridge0 inet 169.254.40.7/16
addr=bridge0 inet6 fe80::30f:a3ff:fe11:2201/64
netif=bridge0 status=active
launchd=gui
python_requested=python3
python_path=/opt/homebrew/bin/python3
python_version=3.12.7
python_venv=yes
install_dir=/Users/alice/.boltpipe
disk_path=/Users/alice
disk_free_bytes=182536110080
probe_end=1
"""

INTEL_MAC = """\
probe_version=1
os=Darwin
arch=x86_64
hostname=old-mini.local
user=bob
os_version=13.6.7
cpu=Intel(R) Core(TM) i7-8700B CPU @ 3.20GHz
mem_total_bytes=34359738368
metal=Supported, feature set macOS GPUFamily2 v1
ane=no
hwport=en0 Ethernet
hwport=en1 Wi-Fi
hwport=bridge0 Thunderbolt Bridge
hwport=en2 Thunderbolt 1
hwport=en3 Thunderbolt 2
addr=lo0 inet 127.0.0.1/8
addr=en0 inet 192.168.1.30/24
netif=en0 status=active
netif=en2 status=inactive
netif=en3 status=inactive
netif=bridge0 status=inactive
launchd=gui
python_requested=python3
python_path=/usr/bin/python3
python_version=3.9.6
python_venv=yes
install_dir=/Users/bob/.boltpipe
disk_path=/Users/bob
disk_free_bytes=1073741824
probe_end=1
"""

LINUX_TB = """\
os=Linux
os_version=Ubuntu 24.04.1 LTS
arch=x86_64
cpu=AMD Ryzen 7 7840U w/ Radeon 780M Graphics
mem_total_bytes=33324150784
metal=no
ane=no
netif=lo driver=- type=772 flags=0x9 wireless=no operstate=unknown
netif=enp1s0 driver=r8169 type=1 flags=0x1003 wireless=no operstate=up
netif=wlp2s0 driver=iwlwifi type=1 flags=0x1003 wireless=yes operstate=up
netif=thunderbolt0 driver=thunderbolt-net type=1 flags=0x1003 wireless=no operstate=up
addr=lo inet 127.0.0.1/8
addr=enp1s0 inet 192.168.1.40/24
addr=wlp2s0 inet 192.168.1.41/24
addr=thunderbolt0 inet 10.10.0.3/24
systemd_user=running
systemd_linger=no
nvidia_gpu=24564 NVIDIA GeForce RTX 4090
python_requested=python3
python_path=/usr/bin/python3
python_version=3.12.3
python_venv=no
disk_free_bytes=53687091200
probe_end=1
"""


def test_mac_mini_m4_with_thunderbolt_bridge():
    probe = parse_probe(MAC_MINI_M4)
    assert probe.cpu == "Apple M4" and probe.metal == "Metal 3" and probe.ane is True
    assert [(i.name, i.address) for i in probe.thunderbolt_links()] == [("bridge0", "169.254.40.7")]
    findings = check_node(probe)
    assert not [f for f in findings if f.fatal]
    checks = by_check(findings)
    assert all(checks[c].ok for c in ("os", "python", "venv", "disk", "metal", "ane", "thunderbolt", "launchd"))
    assert checks["os"].found == "macOS 15.1 arm64" and checks["memory"].found == "16.0 GiB"
    wired = checks["wired_limit"]  # macOS's default leaves 2/3 of 16 GB to the GPU
    assert wired.status == "warn" and wired.found == "10922 MB of 16384 MB (macOS default)"
    assert "sudo sysctl iogpu.wired_limit_mb=12288" in wired.hint
    raised = check_node(parse_probe(MAC_MINI_M4.replace("wired_limit_mb=0", "wired_limit_mb=12288")))
    assert by_check(raised)["wired_limit"].ok


def test_intel_mac_without_neural_engine():
    probe = parse_probe(INTEL_MAC)
    assert probe.thunderbolt_links() == [] and probe.wired_limit_mb is None
    checks = by_check(check_node(probe))
    assert checks["metal"].ok and checks["metal"].found.startswith("Supported")
    assert checks["ane"].status == "warn" and "Apple silicon" in checks["ane"].hint
    assert checks["thunderbolt"].status == "warn" and "Thunderbolt Bridge" in checks["thunderbolt"].hint
    assert checks["python"].fatal and checks["python"].found == "3.9.6 at /usr/bin/python3"
    assert "brew install python@3.12" in checks["python"].hint
    assert checks["disk"].fatal and checks["disk"].expected == "at least 2.0 GiB"
    assert "wired_limit" not in checks
    assert by_check(check_node(probe, min_disk_bytes=10**9))["disk"].ok


def test_linux_with_thunderbolt_net_and_nvidia():
    probe = parse_probe(LINUX_TB)
    assert probe.complete
    assert {i.name: i.kind for i in probe.interfaces()} == {
        "lo": "loopback", "enp1s0": "ethernet", "wlp2s0": "wifi", "thunderbolt0": "thunderbolt"}
    checks = by_check(check_node(probe, want_backend="gpu"))
    assert checks["thunderbolt"].found == "thunderbolt0 10.10.0.3/24"
    assert checks["nvidia"].ok and checks["nvidia"].found == "NVIDIA GeForce RTX 4090 24.0 GiB"
    assert checks["systemd"].ok and checks["linger"].status == "warn" and "enable-linger" in checks["linger"].hint
    assert checks["venv"].fatal and "python3.12-venv" in checks["venv"].hint
    no_gpu = by_check(check_node(parse_probe(LINUX_TB.replace("nvidia_gpu=", "x=")), want_backend="gpu"))
    assert no_gpu["nvidia"].fatal
    connected_no_ip = parse_probe(LINUX_TB.replace("addr=thunderbolt0 inet 10.10.0.3/24\n", ""))
    tb = by_check(check_node(connected_no_ip))["thunderbolt"]
    assert tb.status == "warn" and tb.found == "thunderbolt0 connected, no address" and "ip addr add" in tb.hint


def test_tolerant_parsing():
    empty = parse_probe("")
    assert isinstance(empty, NodeProbe) and not empty.complete
    assert [(f.check, f.fatal, f.found) for f in check_node(empty)] == [("os", True, "no output")]
    cut = parse_probe(MAC_MINI_M4.split("python_requested")[0])
    checks = by_check(check_node(cut))
    assert checks["probe"].status == "warn" and checks["python"].fatal
    assert parse_probe("os=FreeBSD\nprobe_end=1\n").os == "FreeBSD"
    assert check_node(parse_probe("os=FreeBSD\nprobe_end=1\n"))[0].fatal
    odd = parse_probe("mem_total_bytes=lots\naddr=en0 inet nonsense\naddr=en0\nnetif=\npython_version=3\n= x\n")
    assert odd.mem_total_bytes is None and odd.addresses == [] and odd.python_version is None


def test_preflight_table_and_error():
    results = {"mini2": parse_probe(MAC_MINI_M4), "old-mini": parse_probe(INTEL_MAC),
               "mini3": "connection refused by 10.10.0.3:22"}
    table = preflight_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["node", "OS", "chip", "memory", "Python", "disk", "free", "Metal", "ANE", "Thunderbolt"]
    assert lines[1].split()[:6] == ["mini2", "macOS", "15.1", "Apple", "M4", "16.0"]
    assert "3.12.7" in lines[1] and "Metal 3" in lines[1] and "bridge0 169.254.40.7" in lines[1]
    assert "3.9.6 (unusable)" in lines[2] and lines[2].rstrip().endswith("none")
    assert lines[3].split() == ["mini3", "unreachable"] + ["?"] * 7
    problems = table.split("problems:\n")[1]
    assert "  old-mini: FAIL python: expected Python 3.11+, found 3.9.6 at /usr/bin/python3." in problems
    assert "  old-mini: warn ane:" in problems and "  mini2: warn wired_limit:" in problems
    assert "  mini3: FAIL reach: expected an answer from the probe, found connection refused" in problems

    with pytest.raises(PreflightError) as err:
        require_preflight(results)
    message = str(err.value)
    assert set(err.value.problems) == {"old-mini", "mini3"}
    assert [f.check for f in err.value.problems["old-mini"]] == ["python", "disk"]
    assert "mini2" not in message and "warn" not in message
    assert "old-mini: python: expected Python 3.11+" in message and "mini3: reach:" in message
    findings = require_preflight({"mini2": results["mini2"]})
    assert by_check(findings["mini2"])["python"].ok
