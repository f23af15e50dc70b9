#!/usr/bin/env bash
# What the control node needs before `make demo` or `make test`: a running docker engine,
# debootstrap (the lab base image), an SSH client, make, and Python's venv module. Debian 12 / Ubuntu.
#
#   tools/prereqs.sh           as root: install what is missing (apt) and start the docker engine;
#                              as another user: say which command to run, exit 1
#   tools/prereqs.sh --check   change nothing: exit 0 when all is there, else list it and exit 1
#   tools/prereqs.sh --test    also what `make test` needs: Chromium (the end-to-end test opens the
#                              fleet report in it, headless); combines with --check
#   tools/prereqs.sh --compliance  also what `make compliance` needs: QEMU (the real-kernel VM)
#
# `make demo` and `.ci/run` (with --test) call it first. Exit codes: 0 ready, 1 something missing (message on
# stderr says what and which command fixes it), 2 bad usage.
set -euo pipefail

check_only=false
for_tests=false
for_compliance=false
for arg in "$@"; do
  case "$arg" in
    --check) check_only=true ;;
    --test) for_tests=true ;;
    --compliance) for_compliance=true ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prereqs: unknown option '$arg' (use --check, --test, --compliance or --help)" >&2; exit 2 ;;
  esac
done

say() { echo "prereqs: $*" >&2; }

missing=()
browser=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v make >/dev/null 2>&1 || missing+=(make)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if $for_tests; then
  command -v chromium >/dev/null 2>&1 || browser=(chromium fonts-liberation)
fi
if $for_compliance; then
  command -v qemu-system-x86_64 >/dev/null 2>&1 || browser+=(qemu-system-x86 qemu-utils)
fi

docker_up() { docker info >/dev/null 2>&1; }

if [ "${#missing[@]}" -eq 0 ] && [ "${#browser[@]}" -eq 0 ] && docker_up; then
  exit 0
fi

root=false
[ "$(id -u)" -eq 0 ] && root=true
if $check_only || ! $root; then
  sudo=""
  $root || sudo="sudo "
  if [ "${#missing[@]}" -gt 0 ]; then
    say "missing on this control node: ${missing[*]}"
    say "install them with: ${sudo}apt-get install -y ${missing[*]}"
  fi
  if [ "${#browser[@]}" -gt 0 ]; then
    say "missing for the tests or the VM: ${browser[*]}"
    say "install them with: ${sudo}apt-get install -y --no-install-recommends ${browser[*]}"
  fi
  if ! docker_up; then
    say "the docker engine is not running (or this user may not use it)"
    say "start it with: ${sudo}systemctl start docker   (no systemd: ${sudo}dockerd &)"
  fi
  $check_only || say "or let this script do all of it: sudo $0"
  exit 1
fi

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${#browser[@]}" -gt 0 ]; then
  # Without its recommends: they bring udev, avahi-daemon, upower and CUPS, daemons that a host with
  # an init starts on install, and udev renames the MAC addresses of docker's veth interfaces
  # (MACAddressPolicy=persistent), which cuts the lab's hosts off from each other.
  say "installing ${browser[*]} for the tests or the VM (about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  [ "${#missing[@]}" -gt 0 ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null
fi

if ! docker_up; then
  say "starting the docker engine"
  if [ "$(ps -o comm= -p 1)" = systemd ]; then
    systemctl start docker
  else
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker_up && break; sleep 1; done
  docker_up || { say "the docker engine did not start; see /var/log/dockerd.log or journalctl -u docker"; exit 1; }
fi
say "ready"
