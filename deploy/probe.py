"""Preflight checks of a node before anything is deployed there.

`PROBE_SCRIPT` runs on the node (`sh -s`, script on stdin; `cluster up` over SSH, `cluster doctor`
locally) and prints facts as `key=value` lines. Everything after that is pure: `parse_probe` reads
the lines, `check_node` judges them, `preflight_table` and `PreflightError` tell a person.

The script needs a POSIX sh, uname and awk, nothing else: a node without Python must still be
probed, so that the report can say "install Python" instead of "probe failed". Every probe is
guarded; a missing tool leaves its key out. Keys (one per line; repeated keys make lists):

    probe_version=1                       format of this output
    hostname, user, os (Darwin|Linux|...), os_version, arch, cpu (chip or CPU model)
    mem_total_bytes
    python_requested                      BOLTPIPE_PYTHON as given (default python3)
    python_path, python_version (3.12.4)  absent when not usable; python_error then says why
    python_venv=yes|no                    `import venv, ensurepip` works
    install_dir, disk_path, disk_free_bytes   disk_path: nearest existing directory of install_dir
    metal=<support>|no|unknown            macOS: system_profiler's "Metal Support" value; Linux: no
    ane=yes|no                            Apple Neural Engine (Apple silicon)
    nvidia_gpu=<MiB> <name>               repeated, one per GPU, when nvidia-smi works
    hwport=<device> <port name>           repeated, macOS `networksetup -listallhardwareports`
    netif=<name> <k>=<v> ...              repeated; Linux: driver type flags wireless operstate
                                          from /sys/class/net; macOS: status (active|inactive)
    addr=<iface> inet|inet6 <address>/<prefix>   repeated, one per address
    systemd_user=<is-system-running state>|absent, systemd_linger=yes|no   (Linux)
    launchd=gui|user|no                   (macOS) the launchctl domain that answers
    wired_limit_mb                        (macOS, Apple silicon) iogpu.wired_limit_mb; 0: default
    probe_end=1                           the last line: its absence means the output was cut
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

# The one table formatter of the CLI; a leaf module without imports of its own.
from deploy.text_table import format_rows
from node.interfaces import Interface, classify

PROBE_SCRIPT = r"""
# boltpipe node probe: key=value lines on stdout. POSIX sh; never fails as a whole.
exec 2>/dev/null
PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin"   # sysctl, ifconfig, networksetup live in sbin
LC_ALL=C
export PATH LC_ALL
say() { if [ -n "$2" ]; then printf '%s=%s\n' "$1" "$2"; fi; }
has() { command -v "$1" >/dev/null; }
T=""
if has timeout; then T="timeout 20"; fi   # for tools that may wait on a daemon (Linux only)

# Interface addresses from ifconfig (macOS, or Linux without ip): netmask hex or dotted.
IFCONFIG_AWK='
function octbits(o,  n) { n = 0; while (o > 0) { n += o % 2; o = int(o / 2) } return n }
function maskbits(m,  n, i, c, parts) {
  n = 0
  if (m ~ /^0x/) {
    m = tolower(substr(m, 3))
    for (i = 1; i <= length(m); i++) {
      c = index("0123456789abcdef", substr(m, i, 1)); if (c == 0) return -1
      n += substr("0112122312232334", c, 1)
    }
    return n
  }
  c = split(m, parts, ".")
  for (i = 1; i <= c; i++) n += octbits(parts[i] + 0)
  return n
}
/^[^ \t]/ { name = $1; sub(/:$/, "", name); next }
$1 == "inet" { p = 32; for (i = 2; i < NF; i++) if ($i == "netmask") p = maskbits($(i + 1))
  a = $2; sub(/^addr:/, "", a); print "addr=" name " inet " a "/" p; next }
$1 == "inet6" { a = $2; sub(/%.*/, "", a); p = 128
  for (i = 2; i < NF; i++) if ($i == "prefixlen") p = $(i + 1)
  if (a ~ /\//) print "addr=" name " inet6 " a; else print "addr=" name " inet6 " a "/" p; next }
$1 == "status:" { print "netif=" name " status=" $2 }
'

# One group, parsed whole before it runs, with stdin from /dev/null: a tool that reads stdin must not
# swallow the rest of this script, which `sh -s` is still reading from the same stdin.
{
say probe_version 1
os=$(uname -s)
say os "${os:-unknown}"
say arch "$(uname -m)"
h=$(hostname)
if [ -z "$h" ]; then h=$(uname -n); fi
say hostname "$h"
say user "$(id -un)"

case "$os" in
Darwin)
  say os_version "$(sw_vers -productVersion)"
  say cpu "$(sysctl -n machdep.cpu.brand_string)"
  say mem_total_bytes "$(sysctl -n hw.memsize)"
  if has system_profiler; then
    sp=$(system_profiler SPDisplaysDataType)
    if [ -n "$sp" ]; then
      m=$(printf '%s\n' "$sp" | awk '/^[ \t]*Metal( Support| Family)?:/ { sub(/^[^:]*: */, ""); print; exit }')
      say metal "${m:-no}"
    else
      say metal unknown
    fi
  else
    say metal unknown
  fi
  # Every Apple silicon Mac has the ANE; hw.optional.arm64 is 1 there even under Rosetta.
  ane=no
  if has ioreg && ioreg -rc AppleH11ANEInterface -d 1 | awk '/AppleH11ANEInterface/ { f = 1 } END { exit !f }'; then
    ane=yes
  elif [ "$(sysctl -n hw.optional.arm64)" = 1 ]; then
    ane=yes
  fi
  say ane "$ane"
  say wired_limit_mb "$(sysctl -n iogpu.wired_limit_mb)"
  if has networksetup; then
    networksetup -listallhardwareports | awk '
      /^Hardware Port:/ { sub(/^Hardware Port: */, ""); port = $0; next }
      /^Device:/ { sub(/^Device: */, ""); if (port != "" && $0 != "") print "hwport=" $0 " " port; port = "" }
      /^[ \t]*$/ { port = "" }'
  fi
  if has ifconfig; then ifconfig -a | awk "$IFCONFIG_AWK"; fi
  uid=$(id -u)
  if has launchctl; then
    if launchctl print "gui/$uid" >/dev/null; then say launchd gui
    elif launchctl print "user/$uid" >/dev/null; then say launchd user
    else say launchd no; fi
  fi
  ;;
Linux)
  v=""
  if [ -r /etc/os-release ]; then
    v=$(awk '/^PRETTY_NAME=/ { v = substr($0, 13); gsub(/^"|"$/, "", v); print v; exit }' /etc/os-release)
  fi
  say os_version "${v:-Linux $(uname -r)}"
  say cpu "$(awk -F': *' '/^model name/ && !m { m = $2 } /^Model[ \t]*:/ && !r { r = $2 } /^Hardware/ && !w { w = $2 }
    END { if (m) print m; else if (r) print r; else print w }' /proc/cpuinfo)"
  say mem_total_bytes "$(awk '$1 == "MemTotal:" { printf "%.0f\n", $2 * 1024; exit }' /proc/meminfo)"
  say metal no
  say ane no
  for d in /sys/class/net/*; do
    [ -e "$d" ] || continue
    drv=-; typ=-; flg=-; st=-; w=no
    t=$(readlink "$d/device/driver") && [ -n "$t" ] && drv=${t##*/}
    [ -r "$d/type" ] && read -r typ < "$d/type"
    [ -r "$d/flags" ] && read -r flg < "$d/flags"
    [ -r "$d/operstate" ] && read -r st < "$d/operstate"
    if [ -d "$d/wireless" ] || [ -d "$d/phy80211" ]; then w=yes; fi
    say netif "${d##*/} driver=$drv type=$typ flags=$flg wireless=$w operstate=$st"
  done
  if has ip; then
    ip -o addr show | awk '$3 == "inet" || $3 == "inet6" { n = $2; sub(/@.*/, "", n); print "addr=" n " " $3 " " $4 }'
  elif has ifconfig; then
    ifconfig -a | awk "$IFCONFIG_AWK"
  fi
  if has systemctl; then
    s=$($T systemctl --user is-system-running)   # prints the state even when it exits non-zero
    say systemd_user "${s:-unavailable}"
    if has loginctl; then
      say systemd_linger "$($T loginctl show-user "$(id -un)" -p Linger | awk -F= '$1 == "Linger" { print $2 }')"
    fi
  else
    say systemd_user absent
  fi
  ;;
esac

if has nvidia-smi; then
  $T nvidia-smi --query-gpu=memory.total,name --format=csv,noheader,nounits |
    awk '{ m = $0; sub(/,.*/, "", m); n = $0; sub(/^[^,]*, */, "", n); if (m + 0 > 0) print "nvidia_gpu=" m + 0 " " n }'
fi

py=${BOLTPIPE_PYTHON:-python3}
say python_requested "$py"
pyp=$(command -v "$py")
if [ -z "$pyp" ] || [ ! -x "$pyp" ] || [ -d "$pyp" ]; then
  say python_error "not found"
else
  say python_path "$pyp"
  v=$("$pyp" -c 'import sys; print("%d.%d.%d" % tuple(sys.version_info[:3]))')
  case "$v" in
  [0-9]*.[0-9]*)
    say python_version "$v"
    if "$pyp" -c 'import venv, ensurepip' >/dev/null; then say python_venv yes; else say python_venv no; fi
    ;;
  *) say python_error "did not run" ;;
  esac
fi

dir=${BOLTPIPE_INSTALL_DIR:-$HOME/.boltpipe}
case "$dir" in
"~") dir=$HOME ;;
"~/"*) dir="$HOME/${dir#"~/"}" ;;
esac
say install_dir "$dir"
# It may not exist yet: measure the nearest directory that does.
while [ -n "$dir" ] && [ ! -d "$dir" ]; do
  case "$dir" in
  */*) dir=${dir%/*} ;;
  *) dir=. ;;
  esac
done
say disk_path "${dir:-/}"
say disk_free_bytes "$(df -Pk "${dir:-/}" | awk 'NR == 2 { printf "%.0f\n", $4 * 1024 }')"

say probe_end 1
} </dev/null
exit 0
"""

IFF_LOOPBACK = 0x8  # <linux/if.h>; /sys/class/net/X/flags
DEFAULT_MIN_DISK_BYTES = 2 * 1024**3  # a virtual environment with mlx, mlx-lm, grpc and the wheel
_SYSTEMD_USABLE = ("running", "degraded", "starting", "initializing")
_KEY = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Address:
    interface: str
    family: str  # "inet" | "inet6"
    address: str
    prefix_len: int


@dataclass
class NodeProbe:
    """What PROBE_SCRIPT found. Missing facts read as "" / None, never as an exception."""

    hostname: str = ""
    user: str = ""
    os: str = ""  # "Darwin", "Linux"; "" when the probe said nothing
    os_version: str = ""
    arch: str = ""
    cpu: str = ""
    mem_total_bytes: int | None = None
    python_requested: str = ""
    python_path: str | None = None
    python_version: tuple[int, ...] | None = None
    python_error: str = ""
    python_venv: bool | None = None
    install_dir: str = ""
    disk_path: str = ""
    disk_free_bytes: int | None = None
    metal: str | None = None  # "Metal 3", "Supported"...; None: none or unknown
    ane: bool | None = None
    nvidia_gpus: list[tuple[str, int]] = field(default_factory=list)  # (name, memory bytes)
    hardware_ports: dict[str, str] = field(default_factory=dict)  # macOS device -> port name
    netifs: dict[str, dict[str, str]] = field(default_factory=dict)
    addresses: list[Address] = field(default_factory=list)
    systemd_user: str | None = None
    systemd_linger: bool | None = None
    launchd: str | None = None
    wired_limit_mb: int | None = None
    complete: bool = False
    raw: dict[str, list[str]] = field(default_factory=dict)

    @property
    def os_label(self) -> str:
        if self.os == "Darwin":
            return f"macOS {self.os_version}".strip()
        return self.os_version or self.os or "unknown"

    def link_kind(self, name: str) -> str:
        """The node.interfaces link kind of interface `name`, from the facts the probe sent."""
        if self.os == "Darwin":
            return classify(name, platform="darwin", hardware_ports=self.hardware_ports)
        facts = self.netifs.get(name, {})
        sysfs = {
            "driver": None if facts.get("driver", "-") == "-" else facts["driver"],
            "type": _int(facts.get("type")),
            "loopback": bool((_int(facts.get("flags"), 16) or 0) & IFF_LOOPBACK),
            "wireless": facts.get("wireless") == "yes",
        }
        return classify(name, platform=self.os.lower() or "unknown", sysfs=sysfs)

    def interfaces(self) -> list[Interface]:
        """Usable addresses with their link kinds (IPv6 link-local is left out: it needs a scope)."""
        found = []
        for a in self.addresses:
            try:
                ip = ipaddress.ip_address(a.address)
            except ValueError:
                continue
            if ip.version == 6 and ip.is_link_local:
                continue
            found.append(Interface(a.interface, str(ip), a.prefix_len, self.link_kind(a.interface)))
        return found

    def thunderbolt_ports(self) -> list[str]:
        """Interfaces that are Thunderbolt links, with or without an address."""
        names = list(self.hardware_ports) + list(self.netifs) + [a.interface for a in self.addresses]
        return sorted({n for n in names if self.link_kind(n) == "thunderbolt"})

    def link_down(self, name: str) -> bool:
        facts = self.netifs.get(name, {})
        return facts.get("status") == "inactive" or facts.get("operstate") == "down"

    def thunderbolt_links(self) -> list[Interface]:
        """Thunderbolt interfaces that are up and have a usable address."""
        return [i for i in self.interfaces() if i.kind == "thunderbolt" and not self.link_down(i.name)]


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text, base) if text is not None else None
    except ValueError:
        return None


def _yes(text: str | None) -> bool | None:
    return None if text is None else text == "yes"


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text or not re.fullmatch(r"\d+(\.\d+)+", text):
        return None
    return tuple(int(p) for p in text.split("."))


def parse_probe(text: str) -> NodeProbe:
    """Reads PROBE_SCRIPT's output; lines that are not `key=value` (a login banner) are skipped."""
    raw: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and _KEY.fullmatch(key):
            raw.setdefault(key, []).append(value.strip())

    def one(key: str) -> str | None:
        values = raw.get(key)
        return values[0] if values and values[0] else None

    p = NodeProbe(raw=raw)
    for name in ("hostname", "user", "os", "os_version", "arch", "cpu", "python_requested", "python_error",
                 "install_dir", "disk_path"):
        setattr(p, name, one(name) or "")
    if p.os == "unknown":
        p.os = ""
    p.mem_total_bytes = _int(one("mem_total_bytes"))
    p.python_path = one("python_path")
    p.python_version = _version(one("python_version"))
    p.python_venv = _yes(one("python_venv"))
    p.disk_free_bytes = _int(one("disk_free_bytes"))
    metal = one("metal")
    p.metal = metal if metal not in (None, "no", "unknown") else None
    p.ane = _yes(one("ane"))
    p.systemd_user = one("systemd_user")
    p.systemd_linger = _yes(one("systemd_linger"))
    p.launchd = one("launchd")
    p.wired_limit_mb = _int(one("wired_limit_mb"))
    p.complete = one("probe_end") == "1"
    for value in raw.get("nvidia_gpu", []):
        mib, _, name = value.partition(" ")
        if _int(mib) is not None:
            p.nvidia_gpus.append((name.strip(), int(mib) * 1024**2))
    for value in raw.get("hwport", []):
        device, _, port = value.partition(" ")
        if device and port.strip():
            p.hardware_ports[device] = port.strip()
    for value in raw.get("netif", []):
        parts = value.split()
        if parts:
            facts = p.netifs.setdefault(parts[0], {})
            facts.update(pair.split("=", 1) for pair in parts[1:] if "=" in pair)
    for value in raw.get("addr", []):
        parts = value.split()
        if len(parts) == 3 and parts[1] in ("inet", "inet6") and "/" in parts[2]:
            address, _, prefix = parts[2].partition("/")
            if _int(prefix) is not None:
                p.addresses.append(Address(parts[0], parts[1], address, int(prefix)))
    return p


# --- judging a node (pure) ---------------------------------------------------


@dataclass(frozen=True)
class Finding:
    check: str  # "python", "disk", "thunderbolt"...
    ok: bool
    found: str
    hint: str = ""  # what to do; empty when ok
    fatal: bool = False  # deploying to this node cannot work until it is fixed
    expected: str = ""

    @property
    def status(self) -> str:
        return "ok" if self.ok else "FAIL" if self.fatal else "warn"

    def sentence(self) -> str:
        expected = f"expected {self.expected}, " if self.expected else ""
        hint = f". {self.hint[:1].upper()}{self.hint[1:]}" if self.hint else ""
        return f"{self.check}: {expected}found {self.found}{hint}"


def _ok(check: str, found: str) -> Finding:
    return Finding(check, True, found)


def _warn(check: str, found: str, hint: str, expected: str = "") -> Finding:
    return Finding(check, False, found, hint, False, expected)


def _fail(check: str, found: str, hint: str, expected: str) -> Finding:
    return Finding(check, False, found, hint, True, expected)


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def _version_text(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _install_python_hint(probe: NodeProbe, need: str) -> str:
    if probe.os == "Darwin":
        how = "macOS: `brew install python@3.12` or python.org's installer; Apple's python3 is 3.9"
    else:
        how = "Debian/Ubuntu: `sudo apt install python3 python3-venv`"
    return (f"install Python {need} ({how}), or name another interpreter: the node's ssh.python in the "
            "inventory, `cluster doctor --python PATH` here")


def _check_python(probe: NodeProbe, min_python: tuple[int, ...]) -> list[Finding]:
    need = _version_text(min_python) + "+"
    asked = probe.python_requested or "python3"
    if probe.python_version is None:
        why = probe.python_error or "no answer"
        where = f" ({probe.python_path})" if probe.python_path else ""
        return [_fail("python", f"{asked}{where}: {why}", _install_python_hint(probe, need), f"Python {need}")]
    found = f"{_version_text(probe.python_version)} at {probe.python_path}"
    if probe.python_version[: len(min_python)] < min_python:
        return [_fail("python", found, _install_python_hint(probe, need), f"Python {need}")]
    findings = [_ok("python", found)]
    if probe.python_venv is False:
        minor = ".".join(map(str, probe.python_version[:2]))
        hint = (f"on Debian/Ubuntu: `sudo apt install python3-venv` (or python{minor}-venv)"
                if probe.os == "Linux" else "use a Python that ships venv and ensurepip (python.org, Homebrew)")
        findings.append(_fail("venv", "`import venv, ensurepip` fails", hint, "the venv module with ensurepip"))
    elif probe.python_venv:
        findings.append(_ok("venv", "venv and ensurepip"))
    return findings


def _check_disk(probe: NodeProbe, min_disk_bytes: int) -> Finding:
    where = probe.disk_path or probe.install_dir or "the install directory"
    if probe.disk_free_bytes is None:
        return _warn("disk", f"free space of {where} unknown", "check that `df -Pk` works on the node")
    found = f"{gib(probe.disk_free_bytes)} free at {where}"
    if probe.disk_free_bytes < min_disk_bytes:
        return _fail("disk", found, "free space there, or set the node's ssh.install_dir to a bigger disk",
                     f"at least {gib(min_disk_bytes)}")
    return _ok("disk", found)


def _check_accelerators(probe: NodeProbe, want_backend: str) -> list[Finding]:
    findings = []
    gpu_wanted = want_backend == "gpu"
    if probe.os == "Darwin":
        if probe.metal:
            findings.append(_ok("metal", probe.metal))
        else:
            hint = "MLX will run on the CPU; Metal needs a Mac with a Metal GPU (Apple silicon)"
            findings.append(_fail("metal", "no Metal GPU", hint, "Metal (backend: gpu)") if gpu_wanted
                            else _warn("metal", "no Metal GPU", hint))
        if probe.ane:
            findings.append(_ok("ane", "Apple Neural Engine"))
        else:
            findings.append(_warn("ane", "no Neural Engine", "the Core ML backend needs Apple silicon; MLX still works"))
    else:
        findings.append(_ok("metal", "n/a (not macOS)"))
        findings.append(_ok("ane", "n/a (not macOS)"))
        if probe.nvidia_gpus:
            found = ", ".join(f"{name} {gib(mem)}" for name, mem in probe.nvidia_gpus)
            findings.append(_ok("nvidia", found))
        elif gpu_wanted:
            findings.append(_fail("nvidia", "no NVIDIA GPU (nvidia-smi)", "use backend: auto or cpu for this node",
                                  "a CUDA GPU (backend: gpu)"))
    return findings


def _check_thunderbolt(probe: NodeProbe) -> Finding:
    links = probe.thunderbolt_links()
    if links:
        return _ok("thunderbolt", ", ".join(f"{i.name} {i.address}/{i.prefix_len}" for i in links))
    up = [n for n in probe.thunderbolt_ports() if not probe.link_down(n)
          and (probe.netifs.get(n, {}).get("status") == "active" or probe.os == "Linux")]
    if up:
        hint = ("give the link an address: macOS System Settings > Network > Thunderbolt Bridge > Details > "
                "TCP/IP (manually, e.g. 10.10.0.N/24, or leave it self-assigned); Linux: "
                "`sudo ip addr add 10.10.0.N/24 dev IFACE`")
        return _warn("thunderbolt", f"{', '.join(up)} connected, no address", hint, "a Thunderbolt link with an IP")
    hint = ("connect a Thunderbolt cable to the next machine; macOS: keep the Thunderbolt Bridge service in "
            "System Settings > Network; Linux: `sudo modprobe thunderbolt-net` and authorize the peer "
            "(`boltctl`). Until then traffic takes Ethernet or Wi-Fi")
    return _warn("thunderbolt", "no Thunderbolt link", hint, "a Thunderbolt link with an IP")


def _check_service_manager(probe: NodeProbe) -> list[Finding]:
    if probe.os == "Darwin":
        if probe.launchd in ("gui", "user"):
            return [_ok("launchd", f"{probe.launchd} domain")]
        return [_warn("launchd", probe.launchd or "no answer from launchctl",
                      "workers will be kept running by boltpipe's pid-file supervisor (no restart after reboot)")]
    state = probe.systemd_user or "absent"
    if state not in _SYSTEMD_USABLE:
        return [_warn("systemd", f"systemd --user: {state}",
                      "workers will be kept running by boltpipe's pid-file supervisor (no restart after reboot)")]
    findings = [_ok("systemd", f"systemd --user: {state}")]
    if probe.systemd_linger is False:
        user = probe.user or "$USER"
        findings.append(_warn("linger", "linger off", f"`sudo loginctl enable-linger {user}` keeps user services "
                              "running after the SSH session ends and after reboot"))
    return findings


def recommended_wired_limit_mb(mem_total_bytes: int) -> int:
    """What the GPU may wire while macOS keeps enough: 4 GiB, or 1/8 of memory on big machines."""
    mem_mb = mem_total_bytes // 1024**2
    return mem_mb - max(4096, mem_mb // 8)


def _check_wired_limit(probe: NodeProbe) -> list[Finding]:
    if probe.os != "Darwin" or probe.wired_limit_mb is None or not probe.mem_total_bytes:
        return []
    mem_mb = probe.mem_total_bytes // 1024**2
    # 0 means macOS's default: about 2/3 of memory up to 36 GB, 3/4 above.
    effective = probe.wired_limit_mb or (mem_mb * 2 // 3 if mem_mb <= 36 * 1024 else mem_mb * 3 // 4)
    found = f"{effective} MB of {mem_mb} MB" + (" (macOS default)" if not probe.wired_limit_mb else "")
    want = recommended_wired_limit_mb(probe.mem_total_bytes)
    if effective + 256 >= want:
        return [_ok("wired_limit", found)]
    hint = f"`sudo sysctl iogpu.wired_limit_mb={want}` lets the GPU hold more layers (until the next reboot)"
    return [_warn("wired_limit", found, hint, f"about {want} MB")]


def check_node(
    probe: NodeProbe,
    *,
    min_python: tuple[int, ...] = (3, 11),
    min_disk_bytes: int = DEFAULT_MIN_DISK_BYTES,
    want_backend: str = "auto",
) -> list[Finding]:
    """Every check, passed or not. want_backend is the inventory's "auto" | "gpu" | "cpu":
    with "gpu" a missing Metal or CUDA GPU is fatal, otherwise only a warning."""
    if probe.os not in ("Darwin", "Linux"):
        found = probe.os or ("no output" if not probe.raw else "no `os` line")
        return [_fail("os", found, "boltpipe nodes run macOS or Linux; check that the node's shell is POSIX sh",
                      "Darwin or Linux")]
    findings = [_ok("os", f"{probe.os_label} {probe.arch}".strip())]
    if probe.mem_total_bytes:
        findings.append(_ok("memory", gib(probe.mem_total_bytes)))
    findings += _check_python(probe, min_python)
    findings.append(_check_disk(probe, min_disk_bytes))
    findings += _check_accelerators(probe, want_backend)
    findings.append(_check_thunderbolt(probe))
    findings += _check_service_manager(probe)
    findings += _check_wired_limit(probe)
    if not probe.complete:
        findings.append(_warn("probe", "output ended early", "facts after the cut are missing; run it again"))
    return findings


# --- every node at once --------------------------------------------------------


def node_findings(result: NodeProbe | str, **limits) -> list[Finding]:
    """check_node for a probe; one fatal finding for a node that could not be probed."""
    if isinstance(result, str):
        return [_fail("reach", result or "no answer", "check that `ssh` to the node works and that it has sh",
                      "an answer from the probe")]
    return check_node(result, **limits)


def preflight_findings(results: dict[str, NodeProbe | str], **limits) -> dict[str, list[Finding]]:
    return {name: node_findings(result, **limits) for name, result in results.items()}


def _row(name: str, result: NodeProbe | str, findings: list[Finding]) -> list[str]:
    if isinstance(result, str):
        return [name, "unreachable"] + ["?"] * 7
    p = result
    python = _version_text(p.python_version) if p.python_version else "missing"
    if any(f.check in ("python", "venv") and f.fatal for f in findings) and p.python_version:
        python += " (unusable)"
    if p.os == "Darwin":
        metal, ane = (p.metal or "no").split(",")[0], "yes" if p.ane else "no"  # "Supported, feature set ..."
    else:
        metal = ane = "-"
    links = p.thunderbolt_links()
    tb = ", ".join(f"{i.name} {i.address}" for i in links) or "none"
    return [name, p.os_label, p.cpu or p.arch or "?", gib(p.mem_total_bytes), python, gib(p.disk_free_bytes),
            metal, ane, tb]


def preflight_table(results: dict[str, NodeProbe | str], **limits) -> str:
    """One row per node, then each node's problems (warnings and failures).
    `limits` are check_node's keywords."""
    findings = preflight_findings(results, **limits)
    rows = [["node", "OS", "chip", "memory", "Python", "disk free", "Metal", "ANE", "Thunderbolt"]]
    rows += [_row(name, result, findings[name]) for name, result in results.items()]
    lines = [format_rows(rows)]
    problems = [(name, f) for name, fs in findings.items() for f in fs if not f.ok]
    if problems:
        lines += ["", "problems:"]
        lines += [f"  {name}: {f.status} {f.sentence()}" for name, f in problems]
    return "\n".join(lines)


class PreflightError(RuntimeError):
    """Nodes that cannot take a worker, each with every fatal problem, so that one round of fixes suffices."""

    def __init__(self, problems: dict[str, list[Finding]], table: str = ""):
        self.problems = problems
        lines = ["what preflight found on each node:", table, ""] if table else []
        lines += [f"preflight failed on {len(problems)} node(s); fix these, then run `cluster up` again:"]
        for name, findings in problems.items():
            lines += [f"  {name}: {f.sentence()}" for f in findings]
        super().__init__("\n".join(lines))


def require_preflight(results: dict[str, NodeProbe | str], **limits) -> dict[str, list[Finding]]:
    """Every node's findings; raises PreflightError naming all fatal ones at once."""
    findings = preflight_findings(results, **limits)
    fatal = {name: [f for f in fs if f.fatal] for name, fs in findings.items()}
    fatal = {name: fs for name, fs in fatal.items() if fs}
    if fatal:
        raise PreflightError(fatal)
    return findings
