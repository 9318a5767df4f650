#!/usr/bin/env bash
# What the app-server tests (tests/tomcat/) need: Tomcat 10 (its servlet API jar and catalina.sh),
# a JDK (javac compiles the test servlet), Jackson databind (the JSON reader the servlet uses).
# Installs the missing ones from Debian's packages when apt-get is there.
set -euo pipefail
need=()
[ -x /usr/share/tomcat10/bin/catalina.sh ] && [ -f /usr/share/tomcat10/lib/servlet-api.jar ] || need+=(tomcat10)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -f /usr/share/java/jackson-databind.jar ] || need+=(libjackson2-databind-java)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "ensure-tomcat: installing ${need[*]} (Debian packages)"
  $sudo apt-get update -qq
  # Waits for another apt run's lock instead of failing at once.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
else
  echo "ensure-tomcat: please install ${need[*]} (Tomcat 10.1, a JDK >= 11, Jackson 2 databind)" >&2
  exit 1
fi
