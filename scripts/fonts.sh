#!/usr/bin/env bash
# Installs the font set `strnas dataset synth` renders with and the word list it draws words from (Debian
# packages, system-wide), idempotently. Scene text is set in many faces: sans, serif, condensed, rounded, slab,
# monospace, display and script; a renderer with one family (DejaVu) teaches a recogniser one family. The
# word list (wamerican: /usr/share/dict/words, ~100k English words and names) plays MJSynth's 90k-word
# lexicon; without it synth draws from its ~1.2k built-in common words. A second run with everything present
# only asks dpkg. Without root or passwordless sudo it says what to run and goes on (DejaVu is the minimum).
# STRNAS_FONTS=0 skips it. Logs go to stderr.
set -euo pipefail
[[ "${STRNAS_FONTS:-1}" == "0" ]] && exit 0
PACKAGES=(
  fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35
  fonts-crosextra-carlito fonts-crosextra-caladea fonts-roboto-unhinted fonts-roboto-slab fonts-open-sans
  fonts-lato fonts-comic-neue fonts-cantarell fonts-inconsolata fonts-linuxlibertine
  fonts-league-spartan fonts-bebas-neue fonts-hack fonts-ebgaramond fonts-firacode fonts-lobster
  fonts-lobstertwo fonts-yanone-kaffeesatz fonts-quicksand fonts-jura fonts-paratype fonts-sil-gentium
  wamerican
)
command -v dpkg-query >/dev/null || { echo "fonts: not a Debian system; install a varied set of .ttf/.otf fonts or pass --fonts DIR to dataset synth" >&2; exit 0; }
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    echo "fonts: ${#missing[@]} font packages missing; run: sudo apt-get install ${missing[*]}" >&2
    exit 0
  fi
fi
echo "fonts: installing ${missing[*]} (first time only)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
  "${SUDO[@]}" apt-get update -q >&2 || true
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || echo "fonts: apt-get failed; synth renders with the fonts that are installed" >&2
fi
