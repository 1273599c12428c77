#!/usr/bin/env python3
"""test_sup_config.py — raftsup refuses bad configs with exit 2 and a message, before it
creates anything (no data dir, no pid file, no child); usage errors are exit 2 too; a missing
raftnode binary is exit 1."""
import json
import os
import subprocess

import harness as h


def good_conf(data):
    return {"cluster": "c", "data_dir": data, "nodes": [
        {"id": "node1", "raft": "127.0.0.1:41001", "http": "127.0.0.1:42001"},
        {"id": "node2", "raft": "127.0.0.1:41002", "http": "127.0.0.1:42002"}]}


def run_sup(args, env=None, cwd=None):
    p = subprocess.run([h.RAFTSUP] + args, capture_output=True, timeout=10, env=env, cwd=cwd)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def bad_cases(data):
    def with_nodes(*nodes):
        c = good_conf(data)
        c["nodes"] = list(nodes)
        return json.dumps(c)
    n1 = {"id": "node1", "raft": "127.0.0.1:41001", "http": "127.0.0.1:42001"}
    unknown = good_conf(data)
    unknown["colour"] = "blue"
    return [
        ("invalid JSON", '{"cluster": "c",\n  "data_dir": "%s",\n  "nodes": [ }' % data,
         "line 3, column"),
        ("duplicate id", with_nodes(n1, dict(n1, raft="127.0.0.1:41005", http="127.0.0.1:42005")),
         "duplicate node id"),
        ("duplicate address", with_nodes(n1, dict(n1, id="node2", http="127.0.0.1:42005")),
         "duplicate address"),
        ("unknown key", json.dumps(unknown), 'unknown key "colour"'),
        ("unknown node key", with_nodes(dict(n1, weight=3)), 'unknown key "weight"'),
        ("bad address: no port", with_nodes(dict(n1, raft="127.0.0.1")), "bad raft address"),
        ("bad address: port 0", with_nodes(dict(n1, http="127.0.0.1:0")), "bad http address"),
        ("bad address: port too big", with_nodes(dict(n1, http="127.0.0.1:70000")),
         "bad http address"),
        ("bad address: not a string", with_nodes(dict(n1, raft=8001)), "must be a string"),
        ("empty nodes", with_nodes(), "non-empty"),
        ("bad timing", json.dumps(dict(good_conf(data), heartbeat_ms=500)), "election_timeout"),
        ("bad backoff", json.dumps(dict(good_conf(data), restart_backoff_ms=[500, 100])),
         "restart_backoff_ms"),
    ]


def test_bad_configs_refused(track):
    h.need_binaries(False)
    tmp = track(h.TempDir("raftfs-supconf-")).path
    data = os.path.join(tmp, "data")
    path = os.path.join(tmp, "cluster.json")
    for name, text, expect in bad_cases(data):
        with open(path, "w") as f:
            f.write(text)
        rc, out, err = run_sup([path])
        h.log("%-26s -> %d %s" % (name, rc, err.strip()))
        assert rc == 2, "%s: exit %d, want 2 (%s)" % (name, rc, err)
        assert expect in err, "%s: message %r lacks %r" % (name, err, expect)
        assert path in err, "%s: message does not name the file" % name
        assert not os.path.exists(data), "%s: data dir was created" % name
    rc, _, err = run_sup([os.path.join(tmp, "missing.json")])
    assert rc == 2 and "No such file" in err, (rc, err)
    assert not os.path.exists(data)


def test_usage_errors(track):
    h.need_binaries(False)
    for args in ([], ["a.json", "b.json"], ["--bogus"]):
        rc, _, err = run_sup(args)
        assert rc == 2 and "usage" in err, (args, rc, err)
    rc, out, _ = run_sup(["--help"])
    assert rc == 0 and "usage" in out


def test_missing_raftnode_binary(track):
    h.need_binaries(False)
    tmp = track(h.TempDir("raftfs-supconf-")).path
    data = os.path.join(tmp, "data")
    path = os.path.join(tmp, "cluster.json")
    with open(path, "w") as f:
        json.dump(good_conf(data), f)
    env = dict(os.environ, RAFTFS_RAFTNODE=os.path.join(tmp, "no-such-raftnode"))
    rc, _, err = run_sup([path], env=env)
    assert rc == 1 and "no-such-raftnode" in err, (rc, err)
    assert not os.path.exists(data)


if __name__ == "__main__":
    h.main([test_bad_configs_refused, test_usage_errors, test_missing_raftnode_binary], 60)
