-- The vrs store, plain layout. Every table that holds a municipality's data leads with
-- the issuing municipality code (six ASCII digits), so that it can be partitioned or
-- distributed by it; migrations/partitioned/ holds the same schema hash-partitioned.
-- Keep the two files in step: the tests compare their columns and indexes.
--
-- Domain values that must round-trip exactly (nanosecond timestamps, every version of a
-- dose) are kept as JSONB `record`s beside the key columns that the store searches on.
-- Residents are plain columns: they carry no timestamps, and COPY takes columns fastest.

CREATE TABLE vrs_meta (
    name text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO vrs_meta (name, value) VALUES ('layout', 'plain');

-- Change sequence numbers of dose records (the export cursor), audit order, and one
-- number per import (which upload last handed out a voucher).
CREATE SEQUENCE dose_seq AS bigint;
CREATE SEQUENCE audit_seq AS bigint;
CREATE SEQUENCE import_seq AS bigint;

-- Raises the store's guard error (SQLSTATE VR409, read as a conflict) unless `ok`.
CREATE FUNCTION vrs_check(ok boolean, what text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'VR409', MESSAGE = what;
    END IF;
    RETURN true;
END
$$;

-- 接種対象者: one row per (municipality, addressee number). The addressee sorts by its
-- length, then its digits (numeric order without losing leading zeros).
CREATE TABLE residents (
    municipality text COLLATE "C" NOT NULL,
    addressee_len smallint NOT NULL,
    addressee text COLLATE "C" NOT NULL,
    voucher text COLLATE "C" NOT NULL,
    -- The import that created the row, and the one that last gave it this voucher.
    first_import bigint NOT NULL,
    voucher_import bigint NOT NULL,
    name text NOT NULL,
    name_kana text NOT NULL,
    birth_date date NOT NULL,
    sex smallint NOT NULL,
    address text,
    previous_municipality text COLLATE "C",
    previous_voucher text COLLATE "C",
    personal_number_hash bytea,
    status smallint NOT NULL,
    status_date date,
    PRIMARY KEY (municipality, addressee_len, addressee)
);
CREATE INDEX residents_voucher ON residents (municipality, voucher);
CREATE INDEX residents_previous ON residents (previous_municipality, previous_voucher) WHERE previous_voucher IS NOT NULL;
CREATE INDEX residents_moved_in ON residents (municipality, addressee_len, addressee) WHERE previous_voucher IS NOT NULL;

-- 接種記録: one row per dose with every version in `record`; `municipality` is the
-- owner (the voucher's issuing municipality).
CREATE TABLE doses (
    municipality text COLLATE "C" NOT NULL,
    id bytea NOT NULL,
    voucher text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    revision integer NOT NULL,
    matched boolean NOT NULL,
    site text COLLATE "C" NOT NULL,
    registered_on date NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (municipality, id)
);
CREATE INDEX doses_voucher ON doses (municipality, voucher, id);
CREATE UNIQUE INDEX doses_seq ON doses (municipality, seq);
CREATE INDEX doses_unmatched ON doses (municipality, id) WHERE NOT matched;
CREATE INDEX doses_site ON doses (site, registered_on, id);

-- The idempotency guard: a dose id (from its idempotency key) exists once nationwide.
CREATE TABLE dose_ids (
    id bytea PRIMARY KEY,
    municipality text COLLATE "C" NOT NULL
);

-- (voucher, dose number) slots: which dose holds each.
CREATE TABLE slots (
    municipality text COLLATE "C" NOT NULL,
    voucher text COLLATE "C" NOT NULL,
    dose_number smallint NOT NULL,
    dose bytea NOT NULL,
    PRIMARY KEY (municipality, voucher, dose_number)
);

-- The review queue: one finding per (dose, kind), in its municipality's queue.
CREATE TABLE findings (
    municipality text COLLATE "C" NOT NULL,
    dose bytea NOT NULL,
    kind smallint NOT NULL,
    open boolean NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (municipality, dose, kind)
);
CREATE INDEX findings_queue ON findings (municipality, open DESC, dose, kind);
CREATE INDEX findings_dose ON findings (dose, kind);

-- Statistics counters, one per group.
CREATE TABLE counters (
    municipality text COLLATE "C" NOT NULL,
    day date NOT NULL,
    dose_number smallint NOT NULL,
    sex smallint NOT NULL,
    age_band smallint NOT NULL,
    product text COLLATE "C" NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (municipality, day, dose_number, sex, age_band, product)
);

-- Tablet accounts (small; a reference table on a distributed deployment).
CREATE TABLE accounts (
    municipality text COLLATE "C" NOT NULL,
    id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE INDEX accounts_municipality ON accounts (municipality, id);

-- The audit trail.
CREATE TABLE audit (
    municipality text COLLATE "C" NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('audit_seq'),
    record jsonb NOT NULL,
    PRIMARY KEY (municipality, seq)
);
