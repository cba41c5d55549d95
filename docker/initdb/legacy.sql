-- The example's second service database, which the import-legacy-comments backfill reads.
CREATE DATABASE legacy;
