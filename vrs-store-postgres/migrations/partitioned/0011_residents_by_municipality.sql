-- Residents LIST-partitioned by municipality, one partition per municipality (issue 3), in
-- both layouts: a municipality's first upload fills a fresh table by COPY, builds its
-- indexes once over the loaded rows, and attaches it as the municipality's partition (see
-- src/import.rs), instead of maintaining the voucher index row by row while loading.
-- Partitions are named residents_<code>; the import creates them, with indexes matching
-- the ones below (ATTACH adopts them). Keep this file and partitioned/0011 identical.
ALTER TABLE residents RENAME TO residents_0010;
ALTER INDEX residents_pkey RENAME TO residents_0010_pkey;
ALTER INDEX residents_voucher RENAME TO residents_0010_voucher;
ALTER INDEX residents_previous RENAME TO residents_0010_previous;
DROP INDEX residents_moved_in;

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
    PRIMARY KEY (addressee_len, addressee, municipality)
) PARTITION BY LIST (municipality);
-- Within a partition the municipality is one value: leading an index with it only slows
-- the index builds (PostgreSQL's abbreviated sort keys come from the first column: 3.3 s
-- instead of 0.9 s for the voucher index of 1M residents), so the key and the voucher
-- index lead with what varies. The moved-in residents of a municipality are its
-- partition's entries of residents_previous (which is why residents_moved_in is gone).
CREATE INDEX residents_voucher ON residents (voucher);
CREATE INDEX residents_previous ON residents (previous_municipality, previous_voucher) WHERE previous_voucher IS NOT NULL;

-- The residents stored so far, each municipality into its own partition.
DO $$
DECLARE
    m text;
BEGIN
    FOR m IN SELECT DISTINCT municipality FROM residents_0010 ORDER BY 1 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF residents FOR VALUES IN (%L)', 'residents_' || m, m);
    END LOOP;
END
$$;
INSERT INTO residents SELECT * FROM residents_0010;
DROP TABLE residents_0010;
