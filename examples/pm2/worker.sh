# A heartbeat: one line every five seconds.
while :; do echo "beat $(date +%s)"; sleep 5; done
