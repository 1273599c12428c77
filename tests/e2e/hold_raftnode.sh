#!/bin/sh
# hold_raftnode.sh — test wrapper raftsup execs instead of raftnode: while the file
# $RAFTFS_HOLD_DIR/<id> exists the node stays down (restart attempts exit 1, so raftsup's
# backoff applies); otherwise it execs $RAFTFS_REAL_RAFTNODE with the same arguments.
id=
prev=
for a in "$@"; do
    [ "$prev" = "--id" ] && id=$a
    prev=$a
done
if [ -n "$RAFTFS_HOLD_DIR" ] && [ -e "$RAFTFS_HOLD_DIR/$id" ]; then
    echo "hold_raftnode: $id held down by the test" >&2
    exit 1
fi
exec "$RAFTFS_REAL_RAFTNODE" "$@"
