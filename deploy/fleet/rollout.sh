#!/usr/bin/env bash
# Roll a new bundle out to a fleet: add it to a Triton model repository as a new version, wait
# until each Triton server reports that version ready, then (optionally) copy it to edge boxes
# and load it through their API: a box that runs the model itself swaps to it; a box whose
# model runs on Triton with fallback: local takes it as its new fallback and the server's new
# card (boxes on Triton without a fallback need nothing: watch: true swaps their card in).
# See README.md in this folder, "Rolling out a new model version". --dry-run changes nothing.
set -euo pipefail

PROG=$(basename "$0")
USAGE="usage: $PROG [options] BUNDLE REPO [-- triton-repo options]
       $PROG --added MODEL:N [options] BUNDLE"

usage() {
    cat <<EOF
$USAGE

Adds BUNDLE (an \`adedge export\` folder) to the Triton model repository REPO as version N+1
of each of its stage models (\`adedge triton-repo BUNDLE --out REPO\`; version N is never
rewritten), waits for the new versions on each --triton server, then updates edge boxes.
With --added the repository already has them (\`adedge export --format triton\` wrote them
there): no REPO, nothing is exported; the script waits and updates the edge boxes.

options:
  --name NAME          model name prefix in the repository (default: the bundle folder's
                       name); the models are NAME_<stage>
  --triton HOST[:PORT] a Triton server that serves REPO (HTTP port, default 8000); wait
                       until it reports each new version ready. Repeat for several servers
  --explicit           the servers run --model-control-mode=explicit: ask each to load the
                       models (POST /v2/repository/models/MODEL/load) instead of waiting
                       for its poll
  --added MODEL:N      MODEL version N is already in the servers' repository (instead of
                       REPO): wait for it. Repeat for each stage model of BUNDLE
  --timeout SECONDS    how long to wait for each version to be ready (default 300)
  --edge [USER@]HOST   an edge box: rsync the bundle to a new folder under --edge-dir and
                       load it through its API (POST /api/models/MODEL/load: checked,
                       swapped between two batches, kept across restarts). A local model
                       runs it; a Triton model with fallback: local takes it as its
                       fallback and re-reads the server's card (the bundle must be the
                       server's model). Repeatable
  --edge-model MODEL   the model's name in the edge boxes' config (required with --edge)
  --edge-dir DIR       where bundles live on the edge boxes (default /var/lib/adedge/models)
  --edge-bundle PATH   the bundle is already at PATH on every edge box (a shared mount, or
                       copied by other means): no rsync, PATH is loaded
  --edge-url URL       the edge API, {host} replaced by each box's host name
                       (default https://{host}:5080)
  --edge-cacert FILE   CA certificate of the edge boxes' API (self-signed TLS)
  --dry-run            print what would run, change nothing
  -h, --help           this text

environment:
  ADEDGE               the adedge command (default: adedge; not used with --added); it needs
                       onnx, and tritonclient for the schema check (or ADEDGE_TRITON_PYTHON,
                       see the main README)
  ADEDGE_ADMIN_TOKEN   an admin token of the edge boxes' API (with --edge); it is sent in a
                       header read from stdin, never printed nor put on a command line

example:
  ADEDGE_ADMIN_TOKEN=\$(cat admin.token) $PROG --name line --triton triton-a.plant.lan \\
      --edge adedge@edge1 --edge adedge@edge2 --edge-model line \\
      bundles/line-2026-11-30 /srv/triton/models
EOF
}

die() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    [[ -z ${2:-} ]] || printf 'hint: %s\n' "$2" >&2
    exit 2
}

say() { printf '%s\n' "$*"; }

# a command as one shell-quoted line
show() {
    local quoted
    printf -v quoted '%q ' "$@"
    printf '%s\n' "${quoted% }"
}

name="" explicit=0 timeout_s=300 dry_run=0 edge_bundle=""
edge_model="" edge_dir=/var/lib/adedge/models edge_url='https://{host}:5080' edge_cacert=""
tritons=() edges=() added=() positional=() repo_options=()

while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --name) name=${2:?--name needs a value}; shift 2 ;;
        --triton) tritons+=("${2:?--triton needs HOST[:PORT]}"); shift 2 ;;
        --explicit) explicit=1; shift ;;
        --added) added+=("${2:?--added needs MODEL:N}"); shift 2 ;;
        --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
        --edge) edges+=("${2:?--edge needs [USER@]HOST}"); shift 2 ;;
        --edge-model) edge_model=${2:?--edge-model needs a name}; shift 2 ;;
        --edge-dir) edge_dir=${2:?--edge-dir needs a folder}; shift 2 ;;
        --edge-bundle) edge_bundle=${2:?--edge-bundle needs a path}; shift 2 ;;
        --edge-url) edge_url=${2:?--edge-url needs a URL}; shift 2 ;;
        --edge-cacert) edge_cacert=${2:?--edge-cacert needs a file}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; repo_options=("$@"); break ;;
        -*) printf '%s\n' "$USAGE" >&2; die "unknown option '$1'" "$PROG -h lists them" ;;
        *) positional+=("$1"); shift ;;
    esac
done

wanted=2 what="BUNDLE and REPO"
((${#added[@]} == 0)) || wanted=1 what="only BUNDLE (with --added)"
if ((${#positional[@]} != wanted)); then
    printf '%s\n' "$USAGE" >&2
    die "expected $what, got ${#positional[@]} argument(s)" "$PROG -h for the options"
fi
bundle=${positional[0]%/}
repo=${positional[1]:-}
repo=${repo%/}
adedge=${ADEDGE:-adedge}

# --- checks before anything runs ------------------------------------------------------------
safe='^[A-Za-z0-9_.@:/+-]+$' # paths and names that need no quoting in JSON, ssh or URLs
[[ -d $bundle && -f $bundle/adedge.json ]] ||
    die "'$bundle' is not a bundle folder (no adedge.json)" "pass the --out folder of adedge export"
[[ $timeout_s =~ ^[0-9]+$ && $timeout_s -gt 0 ]] || die "--timeout '$timeout_s' is not a number of seconds"
((explicit == 0 || ${#tritons[@]} > 0)) || die "--explicit needs --triton" "name the servers to load on"
[[ -z $name || $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--name '$name' must be letters, digits, '_', '.', '-'"
for host in "${tritons[@]}"; do
    [[ $host =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] || die "--triton '$host' is not HOST or HOST:PORT"
done
for entry in "${added[@]}"; do
    [[ $entry =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*:[0-9]+$ ]] || die "--added '$entry' is not MODEL:N"
done
if ((${#added[@]})); then
    ((${#tritons[@]} + ${#edges[@]})) || die "--added with neither --triton nor --edge does nothing"
    ((${#repo_options[@]} == 0 && explicit == 0)) || die "--added exports nothing" \
        "drop the triton-repo options and --explicit (load the models when you add them)"
fi
if ((${#edges[@]})); then
    [[ -n $edge_model ]] || die "--edge needs --edge-model" "the model's name under 'models:' in the edge config"
    [[ $edge_model =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--edge-model '$edge_model' is not a model name"
    [[ $edge_dir =~ $safe && $edge_dir == /* ]] || die "--edge-dir '$edge_dir' must be an absolute path of plain characters"
    [[ $edge_url == *'{host}'* ]] || die "--edge-url '$edge_url' has no {host}"
    [[ -z $edge_cacert || -f $edge_cacert ]] || die "--edge-cacert '$edge_cacert' is not a file"
    [[ -z $edge_bundle || ($edge_bundle =~ $safe && $edge_bundle == /*) ]] ||
        die "--edge-bundle '$edge_bundle' must be an absolute path of plain characters"
    for box in "${edges[@]}"; do
        [[ $box =~ ^([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+$ ]] || die "--edge '$box' is not [USER@]HOST"
    done
fi
# on the edge boxes, a new folder each time: a running bundle is never written into
target_dir=${edge_bundle:-"$edge_dir/$(basename "$bundle")-$(date -u +%Y%m%dT%H%M%SZ)"}
if ((${#edges[@]})) && ! [[ $target_dir =~ $safe ]]; then
    die "the bundle folder's name '$(basename "$bundle")' has characters an edge path cannot take" \
        "rename the bundle folder (letters, digits, '_', '.', '-')"
fi
if ((${#edges[@]} && !dry_run)) && [[ -z ${ADEDGE_ADMIN_TOKEN:-} ]]; then
    die "ADEDGE_ADMIN_TOKEN is not set" "export it (an admin token of the edge boxes' API)"
fi
if ((!dry_run)); then
    ((${#added[@]})) || command -v "$adedge" >/dev/null ||
        die "'$adedge' is not installed or not on PATH" "set ADEDGE to the adedge command"
    needed=()
    ((${#tritons[@]} + ${#edges[@]} == 0)) || needed+=(curl)
    ((${#edges[@]} == 0)) || [[ -n $edge_bundle ]] || needed+=(rsync ssh)
    for tool in "${needed[@]}"; do
        command -v "$tool" >/dev/null || die "'$tool' is not installed (needed for --triton/--edge)"
    done
fi

# --- 1. the repository: version N+1 of each stage model -------------------------------------
export_command=("$adedge" triton-repo "$bundle" --out "$repo")
[[ -z $name ]] || export_command+=(--name "$name")
export_command+=("${repo_options[@]}")

models=() versions=()
for entry in "${added[@]}"; do
    models+=("${entry%:*}")
    versions+=("${entry##*:}")
done
if ((${#added[@]})); then
    say "the repository has: ${added[*]}"
elif ((dry_run)); then
    say "would run: $(show "${export_command[@]}")"
else
    say "running: $(show "${export_command[@]}")"
    output=$("${export_command[@]}") || die "adedge triton-repo failed (above); nothing was rolled out"
    printf '%s\n' "$output"
    # its lines: "<model>: version <N> (<platform>) in <folder>"
    line_pattern='^([A-Za-z0-9][A-Za-z0-9_.-]*): version ([0-9]+) '
    while IFS= read -r line; do
        if [[ $line =~ $line_pattern ]]; then
            models+=("${BASH_REMATCH[1]}")
            versions+=("${BASH_REMATCH[2]}")
        fi
    done <<<"$output"
    ((${#models[@]})) || die "adedge triton-repo reported no model version" "read its output above"
fi

# --- 2. each Triton server: the new versions ready ------------------------------------------
for host in "${tritons[@]}"; do
    [[ $host == *:* ]] || host="$host:8000"
    base="http://$host/v2"
    if ((dry_run && ${#added[@]} == 0)); then
        ((explicit)) && say "would ask $base to load each model triton-repo writes (POST $base/repository/models/MODEL/load)"
        say "would wait up to ${timeout_s} s for each new version: GET $base/models/MODEL/versions/N/ready"
        continue
    fi
    for i in "${!models[@]}"; do
        model=${models[i]} version=${versions[i]}
        if ((explicit)); then
            curl -fsS -X POST --max-time "$timeout_s" "$base/repository/models/$model/load" >/dev/null ||
                die "$host refused to load $model" "see the server's log"
        fi
        if ((dry_run)); then
            say "would wait up to ${timeout_s} s: GET $base/models/$model/versions/$version/ready"
            continue
        fi
        say "waiting for $model version $version on $host ..."
        deadline=$((SECONDS + timeout_s))
        until curl -fsS --max-time 5 -o /dev/null "$base/models/$model/versions/$version/ready" 2>/dev/null; do
            ((SECONDS < deadline)) ||
                die "$model version $version is not ready on $host after ${timeout_s} s" \
                    "check the server's log (a model that fails to load stays unready); edge boxes were not touched"
            sleep 2
        done
        say "$model version $version is ready on $host"
    done
done

# --- 3. edge boxes: copy the bundle to a new folder, load it ----------------------------------
# a box whose model runs on Triton (with fallback: local) is loaded only now that the servers
# carry the new card: the bundle is checked to be the model the server serves
body="{\"bundle\": \"$target_dir\"}"
curl_tls=()
[[ -z $edge_cacert ]] || curl_tls=(--cacert "$edge_cacert")

copy_to() { # [USER@]HOST
    local copy=(rsync -a -- "$bundle/" "$1:$target_dir/")
    if [[ -n $edge_bundle ]]; then
        say "$1: the bundle is already at $target_dir (--edge-bundle)"
    elif ((dry_run)); then
        say "would run: $(show "${copy[@]}")"
    else
        say "copying the bundle to $1:$target_dir ..."
        "${copy[@]}" || die "rsync to $1 failed" "the box kept its model; fix ssh/rsync and run again"
    fi
}

for box in "${edges[@]}"; do
    host=${box#*@}
    url="${edge_url//\{host\}/$host}/api/models/$edge_model/load"
    copy_to "$box"
    if ((dry_run)); then
        say "would run: curl -sS -X POST ${curl_tls[*]:+${curl_tls[*]} }-H 'Authorization: Bearer ***' -H 'Content-Type: application/json' --data '$body' $url"
        continue
    fi
    answer=$(mktemp)
    # the token goes to curl on stdin (-H @-): not on its command line, never printed
    code=$(printf 'Authorization: Bearer %s\n' "$ADEDGE_ADMIN_TOKEN" |
        curl -sS -X POST "${curl_tls[@]}" --max-time 600 -H @- \
            -H 'Content-Type: application/json' --data "$body" \
            -o "$answer" -w '%{http_code}' "$url") || code=000
    if [[ $code != 2?? ]]; then
        printf '%s: %s answered %s:\n' "$PROG" "$url" "$code" >&2
        cat "$answer" >&2
        printf '\n' >&2
        rm -f "$answer"
        die "$box refused the bundle (its running model goes on)" \
            "fix what it says, or roll Triton back by exporting the old bundle again"
    fi
    rm -f "$answer"
    say "$box: $edge_model loaded $target_dir"
done

if ((dry_run)); then
    say "dry run: nothing was written"
else
    say "rolled out $(basename "$bundle"): ${#models[@]} model(s) to ${repo:-the repository}, ${#tritons[@]} server(s), ${#edges[@]} edge box(es)"
fi
