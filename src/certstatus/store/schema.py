"""Versioned schema migrations. Each engine lists the same versions in its own dialect.

responses is a rowid table on purpose: its rows carry two ~800-byte DER blobs, and SQLite's
WITHOUT ROWID layout is for small rows (it measured 2x slower to write here).
"""

from __future__ import annotations

SQLITE_MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE issuers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            certificate BLOB NOT NULL
        );
        CREATE TABLE certificates (
            issuer_id INTEGER NOT NULL REFERENCES issuers (id),
            serial TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('cert', 'precert')),
            not_after INTEGER NOT NULL,
            ingested_at INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
            revoked_at INTEGER,
            reason INTEGER,
            version INTEGER NOT NULL DEFAULT 1,
            priority INTEGER NOT NULL DEFAULT 0,
            due_at INTEGER,
            PRIMARY KEY (issuer_id, serial),
            CHECK (revoked = 0 OR revoked_at IS NOT NULL)
        ) WITHOUT ROWID;
        CREATE INDEX certificates_due ON certificates (priority, due_at)
            WHERE due_at IS NOT NULL;
        CREATE TABLE responses (
            issuer_id INTEGER NOT NULL,
            serial TEXT NOT NULL,
            version INTEGER NOT NULL,
            this_update INTEGER NOT NULL,
            next_update INTEGER NOT NULL,
            refresh_at INTEGER NOT NULL,
            der_sha1 BLOB NOT NULL,
            der_sha256 BLOB NOT NULL,
            UNIQUE (issuer_id, serial)
        );
        """,
    ),
]

SQLITE_MIGRATIONS.append(
    (
        2,
        """
        ALTER TABLE certificates ADD COLUMN crl_partition INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE certificates ADD COLUMN revoked_recorded_at INTEGER;
        CREATE INDEX certificates_revoked ON certificates (issuer_id, crl_partition, not_after)
            WHERE revoked = 1;
        CREATE TABLE crl_state (
            issuer_id INTEGER NOT NULL REFERENCES issuers (id),
            crl_partition INTEGER NOT NULL,
            next_number INTEGER NOT NULL DEFAULT 1,
            dirty_since INTEGER,
            PRIMARY KEY (issuer_id, crl_partition)
        );
        CREATE TABLE crls (
            issuer_id INTEGER NOT NULL REFERENCES issuers (id),
            crl_partition INTEGER NOT NULL,
            crl_number INTEGER NOT NULL,
            this_update INTEGER NOT NULL,
            next_update INTEGER NOT NULL,
            next_build_at INTEGER NOT NULL,
            entries INTEGER NOT NULL,
            der BLOB NOT NULL,
            PRIMARY KEY (issuer_id, crl_partition)
        );
        CREATE TABLE crl_rejections (
            id INTEGER PRIMARY KEY,
            issuer_id INTEGER NOT NULL,
            crl_partition INTEGER NOT NULL,
            crl_number INTEGER NOT NULL,
            code TEXT NOT NULL,
            message TEXT NOT NULL,
            at INTEGER NOT NULL
        );
        """,
    )
)

SQLITE_MIGRATIONS.append(
    (
        3,
        """
        CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at_ms INTEGER NOT NULL);
        INSERT INTO heartbeat (id, at_ms) VALUES (1, 0);
        """,
    )
)

SQLITE_MIGRATIONS.append(
    (
        4,
        """
        INSERT INTO crl_state (issuer_id, crl_partition)
            SELECT DISTINCT issuer_id, crl_partition FROM certificates WHERE true
            ON CONFLICT DO NOTHING;
        """,
    )
)

# PostgreSQL: the same versions and tables in its dialect. Times are Unix seconds (BIGINT),
# except the heartbeat, which is milliseconds of the primary's clock.
POSTGRES_MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE issuers (
            id BIGSERIAL PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            certificate BYTEA NOT NULL
        );
        CREATE TABLE certificates (
            issuer_id BIGINT NOT NULL REFERENCES issuers (id),
            serial TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('cert', 'precert')),
            not_after BIGINT NOT NULL,
            ingested_at BIGINT NOT NULL,
            revoked SMALLINT NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
            revoked_at BIGINT,
            reason INTEGER,
            version BIGINT NOT NULL DEFAULT 1,
            priority SMALLINT NOT NULL DEFAULT 0,
            due_at BIGINT,
            PRIMARY KEY (issuer_id, serial),
            CHECK (revoked = 0 OR revoked_at IS NOT NULL)
        );
        CREATE INDEX certificates_due ON certificates (priority, due_at)
            WHERE due_at IS NOT NULL;
        CREATE TABLE responses (
            issuer_id BIGINT NOT NULL,
            serial TEXT NOT NULL,
            version BIGINT NOT NULL,
            this_update BIGINT NOT NULL,
            next_update BIGINT NOT NULL,
            refresh_at BIGINT NOT NULL,
            der_sha1 BYTEA NOT NULL,
            der_sha256 BYTEA NOT NULL,
            PRIMARY KEY (issuer_id, serial)
        );
        """,
    ),
    (
        2,
        """
        ALTER TABLE certificates ADD COLUMN crl_partition INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE certificates ADD COLUMN revoked_recorded_at BIGINT;
        CREATE INDEX certificates_revoked ON certificates (issuer_id, crl_partition, not_after)
            WHERE revoked = 1;
        CREATE TABLE crl_state (
            issuer_id BIGINT NOT NULL REFERENCES issuers (id),
            crl_partition INTEGER NOT NULL,
            next_number BIGINT NOT NULL DEFAULT 1,
            dirty_since BIGINT,
            PRIMARY KEY (issuer_id, crl_partition)
        );
        CREATE TABLE crls (
            issuer_id BIGINT NOT NULL REFERENCES issuers (id),
            crl_partition INTEGER NOT NULL,
            crl_number BIGINT NOT NULL,
            this_update BIGINT NOT NULL,
            next_update BIGINT NOT NULL,
            next_build_at BIGINT NOT NULL,
            entries BIGINT NOT NULL,
            der BYTEA NOT NULL,
            PRIMARY KEY (issuer_id, crl_partition)
        );
        CREATE TABLE crl_rejections (
            id BIGSERIAL PRIMARY KEY,
            issuer_id BIGINT NOT NULL,
            crl_partition INTEGER NOT NULL,
            crl_number BIGINT NOT NULL,
            code TEXT NOT NULL,
            message TEXT NOT NULL,
            at BIGINT NOT NULL
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE heartbeat (id SMALLINT PRIMARY KEY CHECK (id = 1), at_ms BIGINT NOT NULL);
        INSERT INTO heartbeat (id, at_ms) VALUES (1, 0);
        """,
    ),
    (
        4,
        # crl_state now lists every partition that holds certificates (written at ingest), so
        # the CRL builder never scans certificates to find them; this fills it for old rows
        """
        INSERT INTO crl_state (issuer_id, crl_partition)
            SELECT DISTINCT issuer_id, crl_partition FROM certificates
            ON CONFLICT DO NOTHING;
        """,
    ),
]

# v5: the purge queue (cache tier). A status change enqueues a purge in the transaction that
# makes it, so no revocation's purge is lost; the purger sends it once the new response exists.
# Deliveries are recorded per (purge, cache, pass), so sequence gaps and out-of-order commits
# cannot make a cursor skip a purge; a purge delivered everywhere is settled, then pruned.
SQLITE_MIGRATIONS.append(
    (
        5,
        """
        CREATE TABLE purges (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('ocsp', 'crl')),
            issuer_id INTEGER NOT NULL,
            serial TEXT,
            crl_partition INTEGER,
            version INTEGER,
            created_at INTEGER NOT NULL,
            ready_at INTEGER,
            settled_at INTEGER
        );
        CREATE INDEX purges_unsettled ON purges (ready_at) WHERE settled_at IS NULL;
        CREATE INDEX purges_settled ON purges (settled_at) WHERE settled_at IS NOT NULL;
        CREATE TABLE purge_deliveries (
            purge_id INTEGER NOT NULL,
            cache TEXT NOT NULL,
            pass INTEGER NOT NULL,
            delivered_at INTEGER NOT NULL,
            PRIMARY KEY (purge_id, cache, pass)
        ) WITHOUT ROWID;
        """,
    )
)

POSTGRES_MIGRATIONS.append(
    (
        5,
        """
        CREATE TABLE purges (
            id BIGSERIAL PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('ocsp', 'crl')),
            issuer_id BIGINT NOT NULL,
            serial TEXT,
            crl_partition INTEGER,
            version BIGINT,
            created_at BIGINT NOT NULL,
            ready_at BIGINT,
            settled_at BIGINT
        );
        CREATE INDEX purges_unsettled ON purges (ready_at) WHERE settled_at IS NULL;
        CREATE INDEX purges_settled ON purges (settled_at) WHERE settled_at IS NOT NULL;
        CREATE TABLE purge_deliveries (
            purge_id BIGINT NOT NULL,
            cache TEXT NOT NULL,
            pass SMALLINT NOT NULL,
            delivered_at BIGINT NOT NULL,
            PRIMARY KEY (purge_id, cache, pass)
        );
        """,
    )
)

# v6: the monitor's watchdog follows new certificates by ingestion time.
_INGESTED = "CREATE INDEX certificates_ingested ON certificates (ingested_at, issuer_id, serial);"
SQLITE_MIGRATIONS.append((6, _INGESTED))
POSTGRES_MIGRATIONS.append((6, _INGESTED))

# v7: the issuance API (issue 12). certificates.not_before, recorded at ingest, lets a
# revocation time before it be refused (NULL on rows recorded earlier: unchecked). The audit log
# (R23): one row per recorded certificate, revocation and refused request, appended in the
# transaction of the change, each row's hash covering the one before (store/audit.py);
# audit_head holds the last sequence number and hash, and its row lock serialises appenders on
# PostgreSQL so the chain has one order.
_AUDIT_COLUMNS = """
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            issuer_id {int},
            serial TEXT,
            request_id TEXT,
            before TEXT,
            after TEXT,
            detail TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
"""
SQLITE_MIGRATIONS.append(
    (
        7,
        f"""
        ALTER TABLE certificates ADD COLUMN not_before INTEGER;
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            {_AUDIT_COLUMNS.format(int="INTEGER")}
        );
        CREATE INDEX audit_certificate ON audit (issuer_id, serial) WHERE serial IS NOT NULL;
        CREATE INDEX audit_at ON audit (at);
        CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL
        );
        INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{"0" * 64}');
        """,
    )
)
POSTGRES_MIGRATIONS.append(
    (
        7,
        f"""
        ALTER TABLE certificates ADD COLUMN not_before BIGINT;
        CREATE TABLE audit (
            seq BIGINT PRIMARY KEY,
            at BIGINT NOT NULL,
            {_AUDIT_COLUMNS.format(int="BIGINT")}
        );
        CREATE INDEX audit_certificate ON audit (issuer_id, serial) WHERE serial IS NOT NULL;
        CREATE INDEX audit_at ON audit (at);
        CREATE TABLE audit_head (
            id SMALLINT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL
        );
        INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{"0" * 64}');
        """,
    )
)

# v8: sites drained by the operator (`certstatus site drain`): data, so that it replicates to
# every responder (even one that reads only replicas) and survives restarts.
_SITE_DRAINS = """
CREATE TABLE site_drains (
    site TEXT PRIMARY KEY,
    drained_at BIGINT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
"""
SQLITE_MIGRATIONS.append((8, _SITE_DRAINS))
POSTGRES_MIGRATIONS.append((8, _SITE_DRAINS))

# v9: periodic queries that cost what is due, not what is stored (issue 15), and expiry
# housekeeping. certificates_expiry orders certificates by notAfter (with the key, so batches
# page by keyset): housekeeping finds expired rows there. responses.retired marks the response
# of an expired certificate (set by housekeeping, never cleared); the two partial indexes hold
# only the other responses, so the freshness metrics (oldest thisUpdate, soonest nextUpdate)
# read the first entries of an index instead of joining every response with its certificate.
# housekeeping holds how far retiring has gone, as a (not_after, issuer_id, serial) key.
# certificates_revoked becomes covering (every column the CRL builder and the gate read), so a
# CRL's entries are one range of a small index rather than a table lookup per entry (SQLite
# wants the revoked column itself in it to cover the query's "revoked = 1").
_START = -(2**62)  # before every notAfter: retiring starts at the beginning
_V9_INDEXES = """
        CREATE INDEX certificates_expiry ON certificates (not_after, issuer_id, serial);
        CREATE INDEX responses_this_update ON responses (this_update) WHERE retired = 0;
        CREATE INDEX responses_next_update ON responses (next_update) WHERE retired = 0;
"""
SQLITE_MIGRATIONS.append(
    (
        9,
        f"""
        ALTER TABLE responses ADD COLUMN retired INTEGER NOT NULL DEFAULT 0;
        {_V9_INDEXES}
        DROP INDEX certificates_revoked;
        CREATE INDEX certificates_revoked ON certificates (issuer_id, crl_partition, not_after,
            revoked_at, reason, revoked_recorded_at, revoked) WHERE revoked = 1;
        CREATE TABLE housekeeping (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            retired_not_after INTEGER NOT NULL,
            retired_issuer INTEGER NOT NULL,
            retired_serial TEXT NOT NULL
        );
        INSERT INTO housekeeping VALUES (1, {_START}, -1, '');
        """,
    )
)
POSTGRES_MIGRATIONS.append(
    (
        9,
        f"""
        ALTER TABLE responses ADD COLUMN retired SMALLINT NOT NULL DEFAULT 0;
        {_V9_INDEXES}
        DROP INDEX certificates_revoked;
        CREATE INDEX certificates_revoked ON certificates (issuer_id, crl_partition, not_after)
            INCLUDE (serial, revoked_at, reason, revoked_recorded_at) WHERE revoked = 1;
        CREATE TABLE housekeeping (
            id SMALLINT PRIMARY KEY CHECK (id = 1),
            retired_not_after BIGINT NOT NULL,
            retired_issuer BIGINT NOT NULL,
            retired_serial TEXT NOT NULL
        );
        INSERT INTO housekeeping VALUES (1, {_START}, -1, '');
        """,
    )
)

# v10: each responder certificate stored once (store/responsecerts.py). A response is stored
# without its trailing `certs` field, which was 500 of its 800 bytes; certs_id names the row of
# response_certs that completes it (0: the stored DER is whole, as every row before v10).
# The id is a hash of the bytes, so it is the same on every server and never reused.
SQLITE_MIGRATIONS.append(
    (
        10,
        """
        CREATE TABLE response_certs (id INTEGER PRIMARY KEY, der BLOB NOT NULL);
        ALTER TABLE responses ADD COLUMN certs_id INTEGER NOT NULL DEFAULT 0;
        """,
    )
)
POSTGRES_MIGRATIONS.append(
    (
        10,
        """
        CREATE TABLE response_certs (id BIGINT PRIMARY KEY, der BYTEA NOT NULL);
        ALTER TABLE responses ADD COLUMN certs_id BIGINT NOT NULL DEFAULT 0;
        """,
    )
)

# v11: when the signer may store responses cut (v10), as a switch in the database. A reader of
# a release before v10 serves a cut row as it is, without its responder certificate, and
# clients reject it; so an upgraded database keeps storing whole rows (certs_id 0, which every
# release serves) until `certstatus response-format --certs-stored-once on` says every
# reader knows certs_id. A database that already holds cut rows ran v10 readers: it stays
# cut (v10 filled response_certs in the transaction of every cut row, so that small table
# tells, where scanning responses would hold the upgrade for minutes). A new database has no
# earlier reader: the migration runner switches it on (FRESH_DATABASE).
_RESPONSE_FORMAT = """
        CREATE TABLE response_format (
            id {small} PRIMARY KEY CHECK (id = 1),
            certs_stored_once {small} NOT NULL CHECK (certs_stored_once IN (0, 1))
        );
        INSERT INTO response_format (id, certs_stored_once)
            SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM response_certs) THEN 1 ELSE 0 END;
"""
SQLITE_MIGRATIONS.append((11, _RESPONSE_FORMAT.format(small="INTEGER")))
POSTGRES_MIGRATIONS.append((11, _RESPONSE_FORMAT.format(small="SMALLINT")))
FRESH_DATABASE = "UPDATE response_format SET certs_stored_once = 1 WHERE id = 1"

# v12: SHA-256 CertID responses signed on request (`certstatus response-format --sha256
# on-request`, store/responseformat.py). Such signers store an empty der_sha256 (not signed)
# for a certificate nobody asked about; a responder asked for its SHA-256 response stamps
# sha256_wanted_at and makes the row due (store/sha256requests.py), and from then on it is
# signed with both CertIDs.
_SHA256_ON_REQUEST = """
        ALTER TABLE certificates ADD COLUMN sha256_wanted_at {big} NOT NULL DEFAULT 0;
        ALTER TABLE response_format ADD COLUMN sha256_on_request {small} NOT NULL DEFAULT 0
            CHECK (sha256_on_request IN (0, 1));
"""
SQLITE_MIGRATIONS.append((12, _SHA256_ON_REQUEST.format(big="INTEGER", small="INTEGER")))
POSTGRES_MIGRATIONS.append((12, _SHA256_ON_REQUEST.format(big="BIGINT", small="SMALLINT")))

# Schema 13: on PostgreSQL a web node's SHA-256 ask runs through a function with its owner's
# rights, so the role in a web node's URL needs EXECUTE on it and no UPDATE on certificates.
# With UPDATE (priority, due_at), what schema 12 asked for, a compromised web node could stop
# every refresh (due_at NULL) or put refreshes ahead of revocations; through the function it
# can only do what an ask does (store/sha256requests.py): make a recorded, unexpired
# certificate due now as a refresh, at most once per ASK_INTERVAL. The priority, the interval
# and the time are the function's own, not arguments, for the same reason: a caller that
# chose the time could ask as often as it liked. SQLite has no roles.
_ASK_FUNCTION = """
DO $do$ BEGIN EXECUTE format($f$
    CREATE FUNCTION certstatus_want_sha256(asked_issuer BIGINT, asked_serial TEXT)
        RETURNS BOOLEAN LANGUAGE sql SECURITY DEFINER SET search_path = %I, pg_temp
    AS $body$
        WITH clock AS (SELECT floor(extract(epoch FROM statement_timestamp()))::bigint AS now),
        asked AS (
            UPDATE certificates SET sha256_wanted_at = clock.now,
                priority = LEAST(priority, {refresh}),
                due_at = CASE WHEN due_at IS NOT NULL AND due_at < clock.now THEN due_at
                    ELSE clock.now END
            FROM clock
            WHERE issuer_id = asked_issuer AND serial = asked_serial AND not_after > clock.now
                AND sha256_wanted_at < clock.now - {interval}
            RETURNING 1)
        SELECT count(*) > 0 FROM asked
    $body$ $f$, current_schema());
END $do$;
REVOKE ALL ON FUNCTION certstatus_want_sha256(BIGINT, TEXT) FROM PUBLIC;
"""
SQLITE_MIGRATIONS.append((13, "SELECT 1;"))
POSTGRES_MIGRATIONS.append((13, _ASK_FUNCTION.format(refresh=2, interval=30)))
