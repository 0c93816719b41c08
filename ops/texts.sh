#!/bin/sh
# texts.sh [OUTDIR] — writes the project's long public-domain English texts
# (PG-19 stand-ins, all published before 1919) as plain UTF-8 under OUTDIR
# (default data/), from Debian packages, so any Debian 12 box can rebuild
# exactly the same files:
#
#   kjv-ot.txt     King James Bible, Genesis..Malachi      (training text)
#   kjv-nt.txt     King James Bible, Matthew..Revelation   (held-out evaluation text)
#   devil.txt      Ambrose Bierce, The Devil's Dictionary  (training text)
#   gcide.txt      Webster's 1913 via GCIDE, definitions   (training text)
#   SHA256SUMS     checksums of the four files
#
# Recipe (so the text reads as prose):
#   bible-kjv  `bible -f "Gen1:1-Rev22:21"` prints one verse per line as
#              "Ge1:1 text"; the label is removed, the verses of a chapter
#              are joined with single spaces into one paragraph, and chapters
#              are separated by a blank line. Matthew 1:1 starts the NT.
#   dict-devil devil.dict.dz: the dictd header entries (00-database-*) are
#              dropped, lines are unindented, the _italic_ underscores
#              removed, and lines are joined into paragraphs at blank lines.
#   dict-gcide gcide.dict.dz: header entries dropped, pronunciations
#              (\...\), source tags ([Webster 1913 Suppl.], [WordNet 1.5],
#              ...) and "Syn:" / "Note:" lines removed, lines joined into
#              paragraphs; only entries tagged [1913 Webster] are kept, so
#              the text is the 1913 dictionary and not the WordNet additions.
# Installs the three packages when missing (needs root, like install-deps).
set -eu
out=${1:-data}
need=""
for p in bible-kjv dict-devil dict-gcide; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then echo "texts.sh: missing packages:$need — run as root" >&2; exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
mkdir -p "$out"
export LC_ALL=C

bible -f "Gen1:1-Rev22:21" | awk -v ot="$out/kjv-ot.txt" -v nt="$out/kjv-nt.txt" '
    match($0, /^[1-3]?[A-Z][A-Za-z]*[0-9]+:[0-9]+ /) {
        label = substr($0, 1, RLENGTH - 1); text = substr($0, RLENGTH + 1)
        split(label, a, ":"); chap = a[1]
        if (label == "Mat1:1") { if (para != "") print para "\n" > f; para = ""; part = 1 }
        f = part ? nt : ot
        if (chap != last && para != "") { print para "\n" > f; para = "" }
        last = chap
        para = para == "" ? text : para " " text
        next
    }
    { if (!bad) printf "texts.sh: unexpected bible line %d: %s\n", NR, $0 > "/dev/stderr"; bad = 1 }
    END { if (para != "") print para > f; exit bad }'

# dictd files: drop the 00-database-* header entries (each runs to the next
# blank-line-separated headword), then join paragraphs.
join_paras='{
        sub(/^[ \t]+/, ""); sub(/[ \t]+$/, "")
        if ($0 == "") { if (p != "") print p "\n"; p = ""; next }
        p = p == "" ? $0 : p " " $0
    }
    END { if (p != "") print p }'

zcat /usr/share/dictd/devil.dict.dz | awk '
    /^00-database/ { skip = 1; next }
    skip && /^[A-Z][A-Z ,.'"'"'-]+, [a-z]+\./ { skip = 0 }
    skip && /PREFACE/ { skip = 0 }
    !skip { gsub(/_/, ""); print }' | awk "$join_paras" > "$out/devil.txt"

zcat /usr/share/dictd/gcide.dict.dz | awk '
    /^00-database/ { hdr = 1; next }
    /^[^ \t]/ && !/^00-/ { hdr = 0 }
    hdr { next }
    { print }' | awk '
    # one entry = lines up to the next unindented headword line
    function flush() { if (e != "" && keep) print e; e = ""; keep = 0 }
    /^[^ \t]/ { flush() }
    { e = e $0 "\n"; if ($0 ~ /\[1913 Webster\]/) keep = 1 }
    END { flush() }' | awk '
    /^[ \t]*(Syn|Note):/ { drop = 1 }
    /^[ \t]*$/ { drop = 0 }
    drop { next }
    {
        gsub(/\\[^\\]*\\/, ""); gsub(/\[[^]]*\]/, ""); gsub(/[ \t]+/, " "); gsub(/[{}]/, "")
        print
    }' | awk "$join_paras" > "$out/gcide.txt"

(cd "$out" && sha256sum kjv-ot.txt kjv-nt.txt devil.txt gcide.txt > SHA256SUMS)
for f in kjv-ot kjv-nt devil gcide; do
    printf 'texts.sh: %-12s %9d bytes\n' "$f.txt" "$(wc -c < "$out/$f.txt")"
done
