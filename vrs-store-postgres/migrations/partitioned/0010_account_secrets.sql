-- Tablet account secrets (issue 7): only the Argon2id hash of each account's secret, as a
-- PHC string; the secret itself is shown once when the account is issued and never stored.
-- Small, like `accounts` (a reference table on a distributed deployment), so it is not
-- partitioned in either layout.
CREATE TABLE account_secrets (
    municipality text COLLATE "C" NOT NULL,
    account text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE INDEX account_secrets_municipality ON account_secrets (municipality, account);
