#!/usr/bin/env bash
# Installs a Vulkan driver for WebGPU on Debian 12 when the machine has no GPU driver: Mesa's
# software rasterizer llvmpipe, from bookworm-backports (Mesa 25), which serves both backends
# (Debian 12's own Mesa 22.3 serves wgpu-native only; Dawn rejects it). Reuses the archive URI
# of the machine's own Debian sources. Needs root (uses sudo when not root).
#
# --chromium also installs Debian's chromium, the headless browser in which the tests drive
# the chat page of `webgpu-llm serve` (through playwright, which cannot download its own).
set -euo pipefail
chromium=0
for arg in "$@"; do
  case "$arg" in
    --chromium) chromium=1 ;;
    *) echo "usage: $0 [--chromium]" >&2; exit 2 ;;
  esac
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
else
  uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
fi
uri=${uri:-http://deb.debian.org/debian}
echo "deb $uri bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
echo "Vulkan driver installed: $(ls /usr/share/vulkan/icd.d/ | tr '\n' ' ')"
if [ "$chromium" = 1 ]; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  echo "chromium installed: $(dpkg-query -W -f='${Version}' chromium)"
fi
