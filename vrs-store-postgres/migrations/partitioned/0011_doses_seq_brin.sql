-- Every registration wrote an entry into the unique b-tree `doses_seq`, which only the
-- delta export reads (`municipality = $1 AND seq > $2 AND seq <= $3`). Each write of a
-- dose takes a new, higher number and appends a row version, so the numbers grow with
-- the table's blocks: a BRIN index over `seq` finds a delta's block ranges (a recent
-- delta reads the last blocks; unsummarized ones are always read, so nothing is missed)
-- and costs a registration next to nothing. The numbers come from the `dose_seq`
-- sequence, so they stay unique without a unique index.
DROP INDEX doses_seq;
CREATE INDEX doses_seq ON doses USING brin (seq);
