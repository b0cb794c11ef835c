-- One Postgres role per service, with rights on its own schema only, so the rule "a service
-- touches only its own schema" is enforced by the database as well as by code review.
--
-- Run it as the database owner after `tally migrate` (which creates the schemas), then give
-- each role a password and point each service's DATABASE_URL at its own role:
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f scripts/roles.sql
--   psql "$DATABASE_URL" -c "ALTER ROLE tally_ingest PASSWORD '...'"     -- and so on
--
-- Migrations keep running as the owner; ALTER DEFAULT PRIVILEGES below hands the tables that
-- later migrations create to the right role. The script is idempotent: run it again at will.
-- Roles are cluster-wide; the grants are per database.

DO $$
DECLARE
    service text;
BEGIN
    FOREACH service IN ARRAY ARRAY['catalog', 'ingest', 'meter', 'invoice'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', 'tally_' || service);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- already there (or created concurrently): grants below still apply
        END;
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', service);
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', service);
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), 'tally_' || service);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', service, 'tally_' || service);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                       service, 'tally_' || service);
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I',
                       service, 'tally_' || service);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
                       service, 'tally_' || service);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %I',
                       service, 'tally_' || service);
    END LOOP;
    -- Nobody but the owner creates objects in public.
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
END
$$;
