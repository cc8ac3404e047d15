"""Issue 6 figures: search latency over 1,000,000 messages, and how fast the FTS index keeps up.

    python tests/bench/bench_search.py [--quick] [--messages N] [--backend asyncio|trio] [--keep DIR]

1. Bulk-builds N messages of realistic text (Zipf-distributed vocabulary of English, code and
   ticket words; 50 agents; 1-3 recipients each) straight into a store file with apsw, in big
   transactions, with the FTS triggers on (so the build rate is the index's insert rate).
2. Measures single-message commits with the triggers (the send path's per-transaction cost).
3. Starts maild on that store and times search_mailbox / search_messages calls over the socket:
   as the operator (no privacy filter) and as a bound agent (privacy filter), across rare,
   common, prefix, phrase, boolean, hyphenated, hostile and filtered queries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import apsw

from maild.services.projects import COLUMNS as PROJECT_COLUMNS
from maild.services.projects import project_dict, slugify
from maild.store.db import format_ts
from maild.store.migrations import apply_migrations
from maild.store.outbox import enqueue
from shared.client import DaemonClient
from shared.paths import MailboxPaths
from tests.bench.common import stop, summarise, temp_mailbox, write_report

COMMON = """
the a to of and in for is on that with this it be as we at by from will are not should can but if or
have has was need after before when then so all any more new also just now only into out up use used
using run runs test tests build fix fixed update updated change changes check please review merge
branch main release deploy deployed pipeline ci job failing failed pass passes green red error
errors warning issue issues bug bugs patch commit push pull request requests file files path module
function class method api endpoint service server client database table query index migration schema
config settings env token tokens auth login session user users cache memory cpu latency timeout
retry queue worker workers lock locks thread threads message messages inbox reply ack agent agents
task tasks plan plans done todo blocked next owner team today tomorrow week friday monday soon later
first last again still
""".split()
RARE_SEED = """
kubernetes terraform flamegraph backpressure idempotency tombstone compaction sharding replication
quorum linearizable hyperloglog bloom trie rope arena mmap epoll kqueue io_uring seccomp apparmor
selinux cgroup namespace overlayfs zstd brotli protobuf flatbuffers capnproto avro parquet arrow
duckdb clickhouse postgres mysql sqlite redis kafka nats rabbitmq zookeeper etcd consul vault nomad
envoy istio linkerd grpc thrift graphql websocket quic http3
""".split()


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    words = COMMON + RARE_SEED
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "do", "shi", "gra", "tor", "ven", "qui"]
    while len(words) < 20000:
        words.append("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    words = list(dict.fromkeys(words))
    weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(words))]
    return words, weights


class TextMaker:
    def __init__(self, seed: int = 6) -> None:
        self.rng = random.Random(seed)
        self.words, self.weights = vocabulary(self.rng)
        self.cum = list(self._accumulate(self.weights))

    @staticmethod
    def _accumulate(weights: list[float]) -> Any:
        total = 0.0
        for w in weights:
            total += w
            yield total

    def words_n(self, n: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum, k=n)

    def subject(self) -> str:
        parts = self.words_n(self.rng.randint(4, 9))
        if self.rng.random() < 0.1:
            parts.append(f"POL-{self.rng.randint(1, 5000)}")
        return " ".join(parts).capitalize()

    def body(self) -> str:
        lines = []
        for _ in range(self.rng.randint(1, 4)):
            text = " ".join(self.words_n(self.rng.randint(8, 30)))
            roll = self.rng.random()
            if roll < 0.2:
                text = f"- {text}"
            elif roll < 0.3:
                text = f"- [ ] {text}"
            elif roll < 0.35:
                text = f"see `src/{self.rng.choice(self.words[:400])}/{self.rng.choice(self.words)}.py` {text}"
            lines.append(text)
        return "\n".join(lines)


def build(db: Path, total: int, batch: int = 50_000) -> dict[str, Any]:
    maker = TextMaker()
    rng = maker.rng
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
    now = "2026-01-01T00:00:00.000000Z"
    apply_migrations(conn, str(db), now)
    with conn:
        project = conn.execute(
            "INSERT INTO projects(slug, human_key, created_ts) VALUES (?, ?, ?) RETURNING id",
            (slugify("bench"), "bench", now),
        ).get
        # The project goes through the outbox as a real one does, so the archive has its project.json
        # and a soak can rebuild its mail from the archive (the prefilled messages themselves never do).
        enqueue(conn, "project", slugify("bench"), {"project": project_dict(conn.execute(
            f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?", (project,)).fetchone())})
        agents = [
            conn.execute(
                "INSERT INTO agents(project_id, name, inception_ts, last_active_ts) VALUES (?, ?, ?, ?) RETURNING id",
                (project, f"Agent{i:02d}", now, now),
            ).get
            for i in range(50)
        ]
        conn.execute(
            "INSERT INTO sessions(id, agent_id, client, created_ts, last_seen_ts)"
            " VALUES ('bench-agent', ?, 'bench', ?, ?)",
            (agents[0], now, now),
        )
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    importance = ["normal"] * 85 + ["low"] * 5 + ["high"] * 8 + ["urgent"] * 2
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(batch, total - done)
        rows = []
        for i in range(done, done + n):
            sender = rng.choice(agents)
            recipients = rng.sample(agents, rng.randint(1, 3))
            thread = f"T{i // 4}" if rng.random() < 0.6 else None
            stamp = format_ts(start + dt.timedelta(seconds=20 * i))
            rows.append((sender, recipients, thread, maker.subject(), maker.body(), rng.choice(importance), stamp))
        with conn:
            for sender, recipients, thread, subject, body, imp, stamp in rows:
                mid = conn.execute(
                    "INSERT INTO messages(project_id, sender_id, thread_id, subject, body_md, importance, created_ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (project, sender, thread, subject, body, imp, stamp),
                ).get
                conn.executemany(
                    "INSERT OR IGNORE INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, 'to')",
                    [(mid, r) for r in recipients],
                )
        done += n
        rate = done / (time.perf_counter() - t0)
        print(f"  built {done:,} / {total:,} messages ({rate:,.0f}/s)", flush=True)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
    optimize_s = time.perf_counter() - t1
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # The send path's shape: one message (and its recipients) per committed transaction, then
    # group commits of 50 (what a batching writer does under load).
    singles = 2000
    stamp = format_ts(start + dt.timedelta(seconds=20 * total))
    texts = [(maker.subject(), maker.body()) for _ in range(2 * singles)]

    def send(subject: str, body: str) -> None:
        mid = conn.execute(
            "INSERT INTO messages(project_id, sender_id, subject, body_md, created_ts)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (project, agents[1], subject, body, stamp),
        ).get
        conn.execute("INSERT INTO message_recipients(message_id, agent_id, kind) VALUES (?, ?, 'to')",
                     (mid, agents[2]))

    t2 = time.perf_counter()
    for subject, body in texts[:singles]:
        with conn:
            send(subject, body)
    single_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    for k in range(singles, 2 * singles, 50):
        with conn:
            for subject, body in texts[k : k + 50]:
                send(subject, body)
    grouped_s = time.perf_counter() - t3
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "messages": total + 2 * singles,
        "bulk_insert_with_fts_per_s": round(total / build_s),
        "bulk_build_seconds": round(build_s, 1),
        "fts_optimize_seconds": round(optimize_s, 1),
        "single_message_commits_with_fts_per_s": round(singles / single_s),
        "group_commits_of_50_with_fts_messages_per_s": round(singles / grouped_s),
        "db_megabytes": round(db.stat().st_size / 1e6, 1),
    }


QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("common term", {"query": "deploy"}),
    ("very common term", {"query": "the"}),
    ("rare term", {"query": "flamegraph"}),
    ("prefix", {"query": "migr*"}),
    ("phrase", {"query": '"merge request"'}),
    ("AND", {"query": "deploy AND tests"}),
    ("OR", {"query": "kafka OR redis"}),
    ("NOT", {"query": "deploy NOT friday"}),
    ("hyphenated", {"query": "POL-358"}),
    ("hostile", {"query": '"unbalanced (( * --'}),
    ("no match", {"query": "zzzzqqq"}),
    ("common + importance", {"query": "deploy", "importance": ["urgent"]}),
    ("common + agent_filter", {"query": "deploy", "agent_filter": "Agent07"}),
    ("common + time range", {"query": "deploy", "since_ts": "2025-01-10T00:00:00Z",
                             "until_ts": "2025-01-12T00:00:00Z"}),
    ("common + thread", {"query": "the", "thread_id": "T1000"}),
    ("common, newest first", {"query": "deploy", "order": "newest"}),
]


def time_queries(client: DaemonClient, tool: str, rounds: int) -> tuple[list[float], dict[str, Any]]:
    samples: list[float] = []
    per: dict[str, list[float]] = {name: [] for name, _ in QUERIES}
    counts: dict[str, int] = {}
    for name, args in QUERIES:  # warm-up (page cache, statement cache)
        counts[name] = len(client.call_tool(tool, {"project_key": "bench", **args})["result"])
    for _ in range(rounds):
        for name, args in QUERIES:
            t0 = time.perf_counter()
            client.call_tool(tool, {"project_key": "bench", **args})
            elapsed = time.perf_counter() - t0
            samples.append(elapsed)
            per[name].append(elapsed)
    detail = {name: {"results": counts[name], **summarise(v)} for name, v in per.items()}
    return samples, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 messages instead of 1,000,000")
    parser.add_argument("--messages", type=int, help="message count (overrides --quick)")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the query set per mode")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--keep", type=Path, help="reuse/keep the built mailbox at this root")
    args = parser.parse_args()
    os.environ["AGENT_MAIL_BACKEND"] = args.backend
    total = args.messages or (100_000 if args.quick else 1_000_000)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        paths = MailboxPaths(args.keep)
    else:
        paths = temp_mailbox("search")
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    build_figures: dict[str, Any] = {}
    if not paths.db.exists():
        print(f"building {total:,} messages in {paths.db}")
        build_figures = build(paths.db, total)
    try:
        with DaemonClient(paths) as operator, DaemonClient(
            paths, hello={"session": "bench-agent", "client": "bench"}
        ) as agent:
            op_all, op_detail = time_queries(operator, "search_mailbox", args.rounds)
            ag_all, ag_detail = time_queries(agent, "search_mailbox", args.rounds)
            hdr_all, _ = time_queries(operator, "search_messages", max(1, args.rounds // 4))
    finally:
        stop(paths)
    write_report(
        "search" if total >= 1_000_000 else f"search-{total}",
        {
            "backend": args.backend,
            "messages": total,
            "build": build_figures,
            "search_mailbox_operator": summarise(op_all),
            "search_mailbox_bound_agent": summarise(ag_all),
            "search_messages_operator": summarise(hdr_all),
            "by_query_operator": op_detail,
            "by_query_bound_agent": ag_detail,
        },
    )


if __name__ == "__main__":
    main()
