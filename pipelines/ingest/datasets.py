"""The five contract datasets: columns, row rules and how valid rows merge.

Every rule of DATA_CONTRACT.md is a SQL expression over the staging table
``s`` (all columns text, as read) left-joined to ``merchants m``; it yields a
human-readable reason or NULL. Validation is set-based in PostgreSQL, so it
costs the same per row whatever the file size. Merges are idempotent upserts
keyed by the contract ids where the latest ``updated_at`` (else the latest
partition) wins, and a no-op re-delivery writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.metrics.money import CURRENCY_EXPONENTS

# ISO 8601 with a mandatory offset or Z. PostgreSQL alone would also accept
# words like 'now' or 'tomorrow' as timestamps.
_TS = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
_DECIMAL = r"^[0-9]+(\.[0-9]{1,2})?$"
# Exact digit/separator shapes that _TS accepts, after mapping digits to 0.
_TS_SHAPES = ", ".join(
    f"'0000-00-00T00:00:00{zone}'" for zone in ("Z", "+00:00", "-00:00", ".000Z", ".000+00:00", ".000000+00:00")
)

# ISO 4217 minor-unit exponents that are not 2 (money is stored in minor units): one table for the project.
_EXPONENTS = CURRENCY_EXPONENTS


_FEWER_THAN_2 = ", ".join(f"'{code}'" for code, exp in sorted(_EXPONENTS.items()) if exp < 2)


def multiplier_sql(currency: str) -> str:
    """SQL for 10 ** exponent of a currency expression, as an integer."""
    by_exponent: dict[int, list[str]] = {}
    for code, exp in sorted(_EXPONENTS.items()):
        by_exponent.setdefault(exp, []).append(f"'{code}'")
    cases = " ".join(f"WHEN {currency} IN ({', '.join(codes)}) THEN {10**exp}" for exp, codes in by_exponent.items())
    return f"(CASE {cases} ELSE 100 END)"


def minor_sql(amount: str, currency: str) -> str:
    """SQL converting a validated decimal text to integer minor units."""
    return f"round(({amount})::numeric * {multiplier_sql(currency)})::bigint"


def _required(column: str) -> str:
    return f"CASE WHEN s.{column} IS NULL OR btrim(s.{column}) = '' THEN '{column} is required' END"


def _ts(column: str, required: bool = True) -> str:
    empty = f"WHEN s.{column} IS NULL THEN {'NULL' if not required else repr(column + ' is required')}"
    # The common shapes are recognised with translate() (a few times cheaper
    # than the regex); they are a subset of _TS, so the result is the same.
    shape = f"translate(s.{column}, '123456789', '000000000') IN ({_TS_SHAPES})"
    return (
        f"CASE {empty} "
        f"WHEN ({shape} OR s.{column} ~ '{_TS}') AND pg_input_is_valid(s.{column}, 'timestamptz') THEN NULL "
        f"ELSE '{column} is not an ISO 8601 timestamp with offset: ' || quote_literal(left(s.{column}, 60)) END"
    )


def _enum(column: str, values: tuple[str, ...], required: bool = True) -> str:
    allowed = ", ".join(f"'{v}'" for v in values)
    empty = f"WHEN s.{column} IS NULL THEN {repr(column + ' is required') if required else 'NULL'}"
    return (
        f"CASE {empty} WHEN s.{column} NOT IN ({allowed}) "
        f"THEN 'unknown {column} ' || quote_literal(left(s.{column}, 40)) || ' (expected one of {'/'.join(values)})' END"
    )


def _decimal(column: str, *, positive: bool, required: bool) -> str:
    empty = f"WHEN s.{column} IS NULL THEN {repr(column + ' is required') if required else 'NULL'}"
    bound = "<= 0" if positive else "< 0"
    word = "> 0" if positive else ">= 0"
    return (
        f"CASE {empty} "
        f"WHEN s.{column} !~ '{_DECIMAL}' "
        f"THEN '{column} is not a decimal with at most 2 places: ' || quote_literal(left(s.{column}, 40)) "
        f"WHEN s.{column}::numeric {bound} THEN '{column} must be {word}, got ' || s.{column} "
        # The regex allows at most 2 places, so only currencies with fewer
        # minor digits (JPY: none) need the exactness test.
        f"WHEN m.currency IN ({_FEWER_THAN_2}) AND s.{column}::numeric * {multiplier_sql('m.currency')} "
        f"<> trunc(s.{column}::numeric * {multiplier_sql('m.currency')}) "
        f"THEN '{column} ' || s.{column} || ' has more decimals than ' || m.currency || ' allows' END"
    )


_KNOWN_MERCHANT = "CASE WHEN s.merchant_id IS NOT NULL AND m.merchant_id IS NULL THEN 'unknown merchant ' || quote_literal(left(s.merchant_id, 64)) END"


# "Newer" for an upsert: latest updated_at wins when both rows carry one,
# otherwise the latest partition; an equal re-delivery re-applies harmlessly.
NEWER = """CASE WHEN t.updated_at IS NOT NULL AND excluded.updated_at IS NOT NULL
  THEN (excluded.updated_at, excluded.source_partition) >= (t.updated_at, COALESCE(t.source_partition, '-infinity'))
  ELSE excluded.source_partition >= COALESCE(t.source_partition, '-infinity') END"""

NEWER_BY_PARTITION = "excluded.source_partition >= COALESCE(t.source_partition, '-infinity')"

# A strictly newer delivery always takes over provenance (source_partition),
# even when its content is identical, so "latest partition wins" stays right
# for later reruns; content comparison decides whether anything downstream
# (items, metric days, text) must be redone.
NEWER_PARTITION = "excluded.source_partition > COALESCE(t.source_partition, '-infinity')"


@dataclass(frozen=True)
class DatasetSpec:
    """How one contract dataset is read, checked and merged."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    key: tuple[str, ...]
    checks: tuple[str, ...]
    # Statements run in order with the deduplicated valid rows in temp table
    # ``valid`` and the partition as the parameter ``%(partition)s``.
    merge: tuple[str, ...]
    order_by: str = "s.line_no DESC"  # which duplicate within a file wins
    needs_merchant: bool = True
    # Extra FROM items for the checks pass (lateral lookups computed once per
    # row) and (alias, expression) columns carried from it into ``valid``.
    lookup: str = ""
    carry: tuple[tuple[str, str], ...] = ()
    # Optional fast path for rows with no stored version yet (the bulk of a
    # new day's file): ``fresh`` is the SQL test for such a row of ``valid v``
    # and ``fresh_merge`` the statements that write them with plain INSERTs
    # (no conflict handling, no change test: every one of them is new). A
    # unique violation (another session stored the same key since the checks)
    # rolls back the quarantine and the merge, and the file's rows are checked
    # again against what is stored now. The first statement's row count is the
    # number of rows changed.
    fresh: str = ""
    fresh_merge: tuple[str, ...] = ()
    # Rules that read stored rows (not just the file and the merchants) can
    # miss what the previous file of the same run writes when the two files
    # are checked and applied side by side (``FilePipeline``). ``recheck``
    # selects the staged rows ``s`` to check again once it has committed;
    # ``{previous}`` names that file's staging table.
    recheck: str = ""


MERCHANTS = DatasetSpec(
    name="merchants",
    columns=("merchant_id", "name", "category", "country", "currency", "timezone", "created_at", "updated_at"),
    required=("merchant_id", "name", "category", "country", "currency", "timezone", "created_at"),
    key=("merchant_id",),
    needs_merchant=False,
    checks=(
        _required("merchant_id"),
        "CASE WHEN char_length(s.merchant_id) > 64 THEN 'merchant_id longer than 64 characters' END",
        _required("name"),
        _required("category"),
        "CASE WHEN s.country IS NULL THEN 'country is required' WHEN s.country !~ '^[A-Z]{2}$' "
        "THEN 'country is not an ISO 3166-1 alpha-2 code: ' || quote_literal(left(s.country, 20)) END",
        "CASE WHEN s.currency IS NULL THEN 'currency is required' WHEN s.currency !~ '^[A-Z]{3}$' "
        "THEN 'currency is not an ISO 4217 code: ' || quote_literal(left(s.currency, 20)) END",
        "CASE WHEN s.timezone IS NULL THEN 'timezone is required' "
        "WHEN NOT EXISTS (SELECT 1 FROM ingest_timezones z WHERE z.name = s.timezone) "
        "THEN 'unknown timezone ' || quote_literal(left(s.timezone, 60)) END",
        _ts("created_at"),
        _ts("updated_at", required=False),
    ),
    order_by="s.updated_at::timestamptz DESC NULLS LAST, s.line_no DESC",
    merge=(
        f"""
        INSERT INTO merchants AS t (merchant_id, name, category, country, currency, timezone,
                                    created_at, updated_at, source_partition, loaded_at)
        SELECT merchant_id, name, category, country, currency, timezone,
               created_at::timestamptz, updated_at::timestamptz, %(partition)s, now()
        FROM valid
        ON CONFLICT (merchant_id) DO UPDATE SET
          name = excluded.name, category = excluded.category, country = excluded.country,
          currency = excluded.currency, timezone = excluded.timezone, created_at = excluded.created_at,
          updated_at = excluded.updated_at, source_partition = excluded.source_partition, loaded_at = now()
        WHERE ({NEWER})
          AND ({NEWER_PARTITION} OR (t.name, t.category, t.country, t.currency, t.timezone, t.created_at, t.updated_at)
              IS DISTINCT FROM (excluded.name, excluded.category, excluded.country, excluded.currency,
                                excluded.timezone, excluded.created_at, excluded.updated_at))
        """,
    ),
)

PRODUCTS = DatasetSpec(
    name="products",
    columns=("product_id", "merchant_id", "name", "category", "price", "description", "active", "updated_at"),
    required=("product_id", "merchant_id", "name", "price"),
    key=("merchant_id", "product_id"),
    checks=(
        _required("product_id"),
        _required("merchant_id"),
        _KNOWN_MERCHANT,
        _required("name"),
        _decimal("price", positive=False, required=True),
        "CASE WHEN s.active IS NOT NULL AND lower(s.active) NOT IN ('true', 'false') "
        "THEN 'active must be true or false, got ' || quote_literal(left(s.active, 20)) END",
        _ts("updated_at", required=False),
    ),
    order_by="s.updated_at::timestamptz DESC NULLS LAST, s.line_no DESC",
    merge=(
        f"""
        INSERT INTO products AS t (merchant_id, product_id, name, category, price_minor, currency,
                                   description, active, updated_at, source_partition, loaded_at, text_dirty)
        SELECT v.merchant_id, v.product_id, v.name, v.category, {minor_sql("v.price", "m.currency")}, m.currency,
               v.description, COALESCE(lower(v.active) = 'true', true), v.updated_at::timestamptz,
               %(partition)s, now(), true
        FROM valid v JOIN merchants m ON m.merchant_id = v.merchant_id
        ON CONFLICT (merchant_id, product_id) DO UPDATE SET
          name = excluded.name, category = excluded.category, price_minor = excluded.price_minor,
          currency = excluded.currency, description = excluded.description, active = excluded.active,
          updated_at = excluded.updated_at, source_partition = excluded.source_partition, loaded_at = now(),
          text_dirty = t.text_dirty OR (t.name, t.category, t.description)
                       IS DISTINCT FROM (excluded.name, excluded.category, excluded.description)
        WHERE ({NEWER})
          AND ({NEWER_PARTITION} OR (t.name, t.category, t.price_minor, t.currency, t.description, t.active, t.updated_at)
              IS DISTINCT FROM (excluded.name, excluded.category, excluded.price_minor, excluded.currency,
                                excluded.description, excluded.active, excluded.updated_at))
        """,
    ),
)

_TXN_TYPES = ("PAYMENT", "REFUND", "CHARGEBACK")
_TXN_STATUSES = ("SUCCESSFUL", "FAILED", "CANCELLED")
_METHODS = ("CARD", "CONTACTLESS", "WALLET", "CASH", "QR", "OTHER")

# Every item: an object with a non-empty string product_id, a positive integer
# quantity and a unit_price (number or string) with at most 2 decimals. One
# jsonpath evaluated in C; a non-object element has none of the keys, so the
# exists() tests fail for it too.
_BAD_ITEM_PATH = (
    '$[*] ? (!exists(@.product_id ? (@.type() == "string" && @ != ""))'
    ' || !exists(@.quantity ? (@.type() == "number" && @ > 0 && @ <= 2147483647 && @ == @.floor()))'
    ' || !exists(@.unit_price ? ((@.type() == "number" && @ >= 0 && @ * 100 == (@ * 100).floor())'
    ' || (@.type() == "string" && @ like_regex "^[0-9]+(\\\\.[0-9]{1,2})?$"))))'
)

_PREV = ("merchant_id", "occurred_at", "type", "status", "amount_minor", "tip_minor", "payment_method",
         "customer_id", "refund_of")  # fmt: skip

# Shared by the general merge and the fresh-rows fast path, so both write the same values.
_TXN_COLUMNS = """transaction_id, merchant_id, occurred_at, type, status, amount_minor,
            tip_minor, currency, payment_method, card_scheme, customer_id, location_id, refund_of, updated_at,
            source_partition, loaded_at"""
_TXN_VALUES = f"""v.transaction_id, v.merchant_id, v.occurred_at::timestamptz, v.type, v.status,
                 {minor_sql("v.amount", "m.currency")}, COALESCE({minor_sql("v.tip_amount", "m.currency")}, 0),
                 v.currency, v.payment_method, v.card_scheme, v.customer_id, v.location_id, v.refund_of,
                 v.updated_at::timestamptz, %(partition)s, now()"""
_ITEM_COLUMNS = "transaction_id, line_no, merchant_id, product_id, quantity, unit_price_minor"
_ITEM_VALUES = f"""v.transaction_id, e.ord, v.merchant_id, e.value->>'product_id', (e.value->>'quantity')::int,
               {minor_sql("e.value->>'unit_price'", "m.currency")}"""
# DO UPDATE (not NOTHING) locks an already-queued day until this file
# commits, so an aggregate worker cannot compute it without our change.
_QUEUE_CONFLICT = "ON CONFLICT (merchant_id, day) DO UPDATE SET queued_at = excluded.queued_at"

TRANSACTIONS = DatasetSpec(
    name="transactions",
    columns=(
        "transaction_id", "merchant_id", "occurred_at", "type", "status", "amount", "tip_amount", "currency",
        "payment_method", "card_scheme", "customer_id", "location_id", "refund_of", "items", "updated_at",
    ),
    required=("transaction_id", "merchant_id", "occurred_at", "type", "status", "amount", "currency",
              "payment_method"),
    key=("transaction_id",),
    checks=(
        _required("transaction_id"),
        _required("merchant_id"),
        _KNOWN_MERCHANT,
        _ts("occurred_at"),
        _enum("type", _TXN_TYPES),
        _enum("status", _TXN_STATUSES),
        _decimal("amount", positive=True, required=True),
        _decimal("tip_amount", positive=False, required=False),
        "CASE WHEN s.tip_amount ~ '" + _DECIMAL + "' AND s.amount ~ '" + _DECIMAL + "' "
        "AND s.tip_amount::numeric > s.amount::numeric THEN 'tip_amount ' || s.tip_amount || "
        "' exceeds amount ' || s.amount || ' (tips are part of amount)' END",
        "CASE WHEN s.currency IS NULL THEN 'currency is required' "
        "WHEN m.currency IS NOT NULL AND s.currency <> m.currency "
        "THEN 'currency ' || quote_literal(left(s.currency, 10)) || ' differs from the merchant''s ' || m.currency END",
        _enum("payment_method", _METHODS),
        "CASE WHEN s.refund_of IS NOT NULL AND s.type = 'PAYMENT' "
        "THEN 'refund_of is only allowed on REFUND or CHARGEBACK' END",
        # The original must exist for the same merchant: in the database (an
        # earlier file or partition) or in this file.
        "CASE WHEN s.refund_of IS NOT NULL AND s.type IN ('REFUND', 'CHARGEBACK') "
        "AND ref.found IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM ingest_stage o WHERE o.transaction_id = s.refund_of "
        "                AND o.merchant_id = s.merchant_id AND o.type = 'PAYMENT') "
        "THEN 'refund_of ' || quote_literal(left(s.refund_of, 128)) || ' points to no payment of this merchant' END",
        # A re-delivery may correct a transaction, never move it to another tenant.
        "CASE WHEN prev.merchant_id <> s.merchant_id THEN 'transaction_id already belongs to another merchant' END",
        "CASE WHEN s.items IS NULL THEN NULL "
        "WHEN x.items_json IS NULL THEN 'items is not valid JSON' "
        "WHEN jsonb_typeof(x.items_json) <> 'array' THEN 'items must be a JSON list' "
        f"WHEN jsonb_path_exists(x.items_json, '{_BAD_ITEM_PATH}') "
        "THEN 'items: each item needs a product_id, a positive integer quantity and a unit_price "
        "with at most 2 decimals' END",
        _ts("updated_at", required=False),
    ),
    # One primary-key probe per row finds the stored version (for the tenant
    # check and, in the merge, the old day and the change test), and items
    # are parsed once; both ride along into ``valid``.
    lookup="""
        LEFT JOIN LATERAL (
          SELECT o.merchant_id, o.occurred_at, o.type, o.status, o.amount_minor, o.tip_minor,
                 o.payment_method, o.customer_id, o.refund_of
          FROM transactions o WHERE o.transaction_id = s.transaction_id LIMIT 1) prev ON true
        -- A refund's original in the database: one key probe per refund row.
        -- (As a NOT EXISTS the planner may hash every stored payment instead,
        -- once per file: a cost that grows with the table, not the file.)
        LEFT JOIN LATERAL (
          SELECT true AS found FROM transactions o
          WHERE s.refund_of IS NOT NULL AND o.transaction_id = s.refund_of
            AND o.merchant_id = s.merchant_id AND o.type = 'PAYMENT' LIMIT 1) ref ON true
        LEFT JOIN LATERAL (
          SELECT CASE WHEN pg_input_is_valid(s.items, 'jsonb') THEN s.items::jsonb END AS items_json
          OFFSET 0) x ON true
    """,
    carry=(
        *((f"prev_{c}", f"prev.{c}") for c in _PREV),
        ("items_json", "x.items_json"),
    ),
    order_by="s.updated_at::timestamptz DESC NULLS LAST, s.line_no DESC",
    merge=(
        # 1. Upsert; remember what changed and where it was before (old day).
        f"""
        WITH up AS (
          INSERT INTO transactions AS t ({_TXN_COLUMNS})
          SELECT {_TXN_VALUES}
          FROM valid v JOIN merchants m ON m.merchant_id = v.merchant_id
          ON CONFLICT (transaction_id) DO UPDATE SET
            occurred_at = excluded.occurred_at, type = excluded.type, status = excluded.status,
            amount_minor = excluded.amount_minor, tip_minor = excluded.tip_minor, currency = excluded.currency,
            payment_method = excluded.payment_method, card_scheme = excluded.card_scheme,
            customer_id = excluded.customer_id, location_id = excluded.location_id,
            refund_of = excluded.refund_of, updated_at = excluded.updated_at,
            source_partition = excluded.source_partition, loaded_at = now()
          WHERE ({NEWER})
            AND ({NEWER_PARTITION} OR (t.occurred_at, t.type, t.status, t.amount_minor, t.tip_minor, t.currency, t.payment_method,
                 t.card_scheme, t.customer_id, t.location_id, t.refund_of, t.updated_at)
                IS DISTINCT FROM
                (excluded.occurred_at, excluded.type, excluded.status, excluded.amount_minor, excluded.tip_minor,
                 excluded.currency, excluded.payment_method, excluded.card_scheme, excluded.customer_id,
                 excluded.location_id, excluded.refund_of, excluded.updated_at))
          RETURNING t.transaction_id, t.merchant_id, t.occurred_at, t.type, t.status, t.amount_minor,
                    t.tip_minor, t.payment_method, t.customer_id, t.refund_of
        )
        INSERT INTO ingest_changed (transaction_id, merchant_id, occurred_at, old_occurred_at, existed)
        SELECT up.transaction_id, up.merchant_id, up.occurred_at, v.prev_occurred_at, v.prev_merchant_id IS NOT NULL
        FROM up JOIN valid v ON v.transaction_id = up.transaction_id
        JOIN merchants m ON m.merchant_id = v.merchant_id
        -- An identical re-delivery (provenance only) leaves items and metrics alone.
        WHERE CASE
          WHEN v.prev_merchant_id IS NULL THEN true
          WHEN (v.prev_occurred_at, v.prev_type, v.prev_status, v.prev_amount_minor, v.prev_tip_minor,
                v.prev_payment_method, v.prev_customer_id, v.prev_refund_of)
               IS DISTINCT FROM
               (up.occurred_at, up.type, up.status, up.amount_minor, up.tip_minor, up.payment_method,
                up.customer_id, up.refund_of) THEN true
          ELSE (SELECT coalesce(jsonb_agg(jsonb_build_array(i.product_id, i.quantity, i.unit_price_minor)
                                          ORDER BY i.line_no), '[]')
                FROM transaction_items i WHERE i.transaction_id = up.transaction_id)
               IS DISTINCT FROM
               (SELECT coalesce(jsonb_agg(jsonb_build_array(e.value->>'product_id', (e.value->>'quantity')::int,
                                          {minor_sql("e.value->>'unit_price'", "m.currency")}) ORDER BY e.ord), '[]')
                FROM jsonb_array_elements(coalesce(v.items_json, '[]')) WITH ORDINALITY AS e(value, ord))
        END
        """,
        # Statistics for the next statements (new ids need no delete).
        "ANALYZE ingest_changed",
        # 2. Items of changed transactions are replaced as a whole.
        # As key probes (= ANY of an array): a join may be planned as a scan of
        # every stored item, a cost that grows with the table, not the file.
        """
        DELETE FROM transaction_items i
        WHERE i.transaction_id = ANY (ARRAY(SELECT c.transaction_id FROM ingest_changed c WHERE c.existed))
        """,
        f"""
        INSERT INTO transaction_items ({_ITEM_COLUMNS})
        SELECT {_ITEM_VALUES}
        FROM valid v
        JOIN ingest_changed c ON c.transaction_id = v.transaction_id
        JOIN merchants m ON m.merchant_id = v.merchant_id
        CROSS JOIN LATERAL jsonb_array_elements(v.items_json) WITH ORDINALITY AS e(value, ord)
        WHERE v.items_json IS NOT NULL
        """,
        # 3. Queue the merchant-local days whose metrics changed (old and new day).
        f"""
        INSERT INTO metric_refresh_queue (merchant_id, day)
        SELECT DISTINCT c.merchant_id, (x.at AT TIME ZONE m.timezone)::date
        FROM ingest_changed c
        JOIN merchants m ON m.merchant_id = c.merchant_id
        CROSS JOIN LATERAL (VALUES (c.occurred_at), (c.old_occurred_at)) AS x(at)
        WHERE x.at IS NOT NULL
        {_QUEUE_CONFLICT}
        """,
    ),
    # A transaction id not stored yet: insert it, its items and its day. Equal
    # to what ``merge`` does for such a row (it upserts, finds it changed,
    # has no items to delete and no old day), minus the bookkeeping.
    fresh="v.prev_merchant_id IS NULL",
    # The stored version (tenant check, old day, change test) and a refund's
    # original are the rules that read stored transactions.
    recheck=(
        "s.transaction_id IN (SELECT p.transaction_id FROM {previous} p) "
        "OR s.refund_of IN (SELECT p.transaction_id FROM {previous} p)"
    ),
    fresh_merge=(
        f"""
        INSERT INTO transactions ({_TXN_COLUMNS})
        SELECT {_TXN_VALUES}
        FROM valid v JOIN merchants m ON m.merchant_id = v.merchant_id
        WHERE v.prev_merchant_id IS NULL
        """,
        f"""
        INSERT INTO transaction_items ({_ITEM_COLUMNS})
        SELECT {_ITEM_VALUES}
        FROM valid v
        JOIN merchants m ON m.merchant_id = v.merchant_id
        CROSS JOIN LATERAL jsonb_array_elements(v.items_json) WITH ORDINALITY AS e(value, ord)
        WHERE v.prev_merchant_id IS NULL AND v.items_json IS NOT NULL
        """,
        f"""
        INSERT INTO metric_refresh_queue (merchant_id, day)
        SELECT DISTINCT v.merchant_id, (v.occurred_at::timestamptz AT TIME ZONE m.timezone)::date
        FROM valid v JOIN merchants m ON m.merchant_id = v.merchant_id
        WHERE v.prev_merchant_id IS NULL
        {_QUEUE_CONFLICT}
        """,
    ),
)  # fmt: skip

REVIEWS = DatasetSpec(
    name="reviews",
    columns=("review_id", "merchant_id", "created_at", "rating", "text", "source"),
    required=("review_id", "merchant_id", "created_at", "rating"),
    key=("merchant_id", "review_id"),
    checks=(
        _required("review_id"),
        _required("merchant_id"),
        _KNOWN_MERCHANT,
        _ts("created_at"),
        "CASE WHEN s.rating IS NULL THEN 'rating is required' WHEN s.rating !~ '^[1-5]$' "
        "THEN 'rating must be an integer from 1 to 5, got ' || quote_literal(left(s.rating, 20)) END",
    ),
    merge=(
        f"""
        INSERT INTO reviews AS t (merchant_id, review_id, created_at, rating, text, source, source_partition,
                                  loaded_at, text_dirty)
        SELECT merchant_id, review_id, created_at::timestamptz, rating::smallint, text, source, %(partition)s,
               now(), true
        FROM valid
        ON CONFLICT (merchant_id, review_id) DO UPDATE SET
          created_at = excluded.created_at, rating = excluded.rating, text = excluded.text,
          source = excluded.source, source_partition = excluded.source_partition, loaded_at = now(),
          -- Chunks carry rating, source and date as metadata: any change re-chunks.
          text_dirty = t.text_dirty OR (t.text, t.rating, t.source, t.created_at)
                       IS DISTINCT FROM (excluded.text, excluded.rating, excluded.source, excluded.created_at)
        WHERE {NEWER_BY_PARTITION}
          AND ({NEWER_PARTITION} OR (t.created_at, t.rating, t.text, t.source)
              IS DISTINCT FROM (excluded.created_at, excluded.rating, excluded.text, excluded.source))
        """,
    ),
)

ATTACHMENTS = DatasetSpec(
    name="attachments",
    columns=("attachment_id", "merchant_id", "created_at", "kind", "content_type", "path", "note"),
    required=("attachment_id", "merchant_id", "created_at", "kind", "content_type", "path"),
    key=("merchant_id", "attachment_id"),
    checks=(
        _required("attachment_id"),
        _required("merchant_id"),
        _KNOWN_MERCHANT,
        _ts("created_at"),
        _enum("kind", ("image", "audio", "document")),
        "CASE WHEN s.content_type IS NULL THEN 'content_type is required' "
        "WHEN s.content_type !~ '^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;.*)?$' "
        "THEN 'content_type is not a MIME type: ' || quote_literal(left(s.content_type, 60)) END",
        # A manifest may only point at its own merchant's binaries.
        "CASE WHEN s.path IS NULL THEN 'path is required' "
        "WHEN s.path !~ '^attachments/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/[^/]+/[^/]+$' "
        "OR split_part(s.path, '/', 3) IS DISTINCT FROM s.merchant_id OR split_part(s.path, '/', 4) IN ('.', '..') "
        "THEN 'path ' || quote_literal(left(s.path, 200)) || "
        "' is not under attachments/dt=YYYY-MM-DD/' || coalesce(s.merchant_id, '<merchant_id>') || '/' END",
        "CASE WHEN s.ingest_missing THEN 'attachment file ' || quote_literal(left(s.path, 200)) || ' not found' END",
    ),
    merge=(
        f"""
        INSERT INTO attachments AS t (merchant_id, attachment_id, created_at, kind, content_type, path, note,
                                      extraction_status, source_partition, loaded_at)
        SELECT merchant_id, attachment_id, created_at::timestamptz, kind, content_type, path, note, 'pending',
               %(partition)s, now()
        FROM valid
        ON CONFLICT (merchant_id, attachment_id) DO UPDATE SET
          created_at = excluded.created_at, kind = excluded.kind, content_type = excluded.content_type,
          path = excluded.path, note = excluded.note, source_partition = excluded.source_partition,
          loaded_at = now(),
          extraction_status = CASE WHEN (t.kind, t.content_type, t.path, t.note)
              IS DISTINCT FROM (excluded.kind, excluded.content_type, excluded.path, excluded.note)
            THEN 'pending' ELSE t.extraction_status END,
          extraction_detail = CASE WHEN (t.kind, t.content_type, t.path, t.note)
              IS DISTINCT FROM (excluded.kind, excluded.content_type, excluded.path, excluded.note)
            THEN NULL ELSE t.extraction_detail END
        WHERE {NEWER_BY_PARTITION}
          AND ({NEWER_PARTITION} OR (t.created_at, t.kind, t.content_type, t.path, t.note)
              IS DISTINCT FROM (excluded.created_at, excluded.kind, excluded.content_type, excluded.path,
                                excluded.note))
        """,
    ),
)

SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MERCHANTS, PRODUCTS, TRANSACTIONS, REVIEWS, ATTACHMENTS)}
