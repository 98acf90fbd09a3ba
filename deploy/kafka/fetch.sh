#!/usr/bin/env bash
# Fetches the Kafka broker's jars from Maven Central into deploy/kafka/libs (see pom.xml).
# Idempotent: does nothing when libs/ already holds the jars of the pom's Kafka version.
# Needs: java (17+), mvn.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
if [[ -f "$here/libs/kafka_2.13-$version.jar" && -f "$here/libs/kafka-tools-$version.jar" ]]; then
  exit 0
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "fetch.sh: '$tool' is not installed (apt-get install openjdk-17-jre-headless maven)" >&2; exit 1; }
done
echo "fetch.sh: fetching Apache Kafka $version jars from Maven Central into $here/libs ..." >&2
start=$(date +%s)
rm -rf "$here/libs.tmp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$here/libs.tmp"
rm -rf "$here/libs"
mv "$here/libs.tmp" "$here/libs"
echo "fetch.sh: $(ls "$here/libs" | wc -l) jars in $(( $(date +%s) - start )) s" >&2
