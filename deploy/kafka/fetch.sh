#!/usr/bin/env bash
# Fetches the Kafka broker's jars from Maven Central into deploy/kafka/libs (see pom.xml).
# Idempotent: does nothing when libs/ already holds the jars of the pom's Kafka version.
# Needs java (17+; the broker runs on it) and mvn: on Debian/Ubuntu as root they are installed from the
# distribution when missing (openjdk-17-jre-headless, maven), so a fresh Debian 12 needs nothing by hand.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if (( ${#missing[@]} )); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "fetch.sh: installing ${missing[*]} from the distribution ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "fetch.sh: ${missing[*]} missing; install them (apt-get install ${missing[*]}) and rerun" >&2
    exit 1
  fi
fi
if [[ -f "$here/libs/kafka_2.13-$version.jar" && -f "$here/libs/kafka-tools-$version.jar" ]]; then
  exit 0
fi
echo "fetch.sh: fetching Apache Kafka $version jars from Maven Central into $here/libs ..." >&2
start=$(date +%s)
rm -rf "$here/libs.tmp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$here/libs.tmp"
rm -rf "$here/libs"
mv "$here/libs.tmp" "$here/libs"
echo "fetch.sh: $(ls "$here/libs" | wc -l) jars in $(( $(date +%s) - start )) s" >&2
