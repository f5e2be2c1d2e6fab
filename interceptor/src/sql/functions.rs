//! Built-in functions whose call changes what a statement does (side effects, server files,
//! other sessions, outbound connections, dynamic SQL).
//!
//! | function (any schema, case-insensitive)                                   | adds         | why |
//! |---------------------------------------------------------------------------|--------------|-----|
//! | `pg_terminate_backend`, `pg_cancel_backend`, `pg_signal_backend`, `pg_log_backend_memory_contexts` | `Privileged` | acts on other sessions |
//! | `pg_reload_conf`, `pg_rotate_logfile`, `pg_promote`, `pg_switch_wal`, `pg_create_restore_point`, `pg_backup_start`/`_stop`, `pg_start_backup`/`pg_stop_backup`, `pg_wal_replay_pause`/`_resume`, `pg_stat_reset*`, `pg_stat_statements_reset`, `pg_import_system_collations` | `Privileged` | server administration |
//! | `pg_read_file`, `pg_read_binary_file`, `pg_stat_file`, `pg_ls_*`, `pg_file_*`, `pg_logdir_ls`, `lo_import`, `lo_export` | `Privileged` | server file system |
//! | `lo_get`, `loread`, `lo_open` | `Privileged` | large objects: outside every table rule and the masking |
//! | `dblink*`                                                                 | `Privileged` | outbound connections, remote SQL |
//! | `pg_*replication_slot*`, `pg_logical_slot_*`, `pg_replication_origin_*`, `pg_logical_emit_message`, `pg_sync_replication_slots` | `Privileged` | replication: streams every change |
//! | `query_to_xml*`, `query_to_xmlschema`, `cursor_to_xml*`, `table_to_xml*`, `schema_to_xml*`, `database_to_xml*`, `ts_stat`, `ts_rewrite` (both forms) | `Privileged` | run SQL or read tables named in strings, invisible to table extraction |
//! | extensions: `crosstab*` (`crosstab`, `crosstab2`–`4`), `connectby` (tablefunc), `xpath_table` (xml2), `get_raw_page`, `bt_page_items` (pageinspect), `pg_get_wal_record_info`, `pg_get_wal_records_info`, `pg_get_wal_block_info`, `pg_get_wal_stats` (pg_walinspect), `pg_background_launch`, `run_command_on_*` (Citus), `binary_upgrade_*` | `Privileged` | the same: run query strings, read tables named in strings or their raw pages / WAL |
//! | `pg_mcv_list_items` | `Privileged` | decodes the most common values kept in `pg_statistic_ext_data`: sample values of any table (see [`is_statistics_relation`]) |
//! | `pg_restore_relation_stats`, `pg_restore_attribute_stats`, `pg_clear_relation_stats`, `pg_clear_attribute_stats` (PostgreSQL 18) | `Privileged` | write the planner statistics (`pg_statistic`) of any table directly |
//! | `set_config`                                                              | `Session` (`Privileged` when the setting is privileged — see [`is_privileged_setting`] — or not a literal: the walker checks the argument) | equivalent to `SET` |
//! | `nextval`, `setval`, `pg_notify`, `lo_create`, `lo_creat`, `lo_unlink`, `lo_put`, `lo_from_bytea`, `lowrite`, `lo_truncate`, `lo_truncate64` | `Write` | change state |
//! | `pg_advisory_lock*`, `pg_advisory_xact_lock*`, `pg_try_advisory_*`, `pg_advisory_unlock*` | `Utility` | locks |
//!
//! `pg_sleep`, `pg_sleep_for` and `pg_sleep_until` are not escalated (they only waste time);
//! like every other function they are listed in `Statement::functions`, so a policy can deny
//! them by name (a rule on `pg_sleep` matches `pg_catalog.pg_sleep(…)` too). Functions
//! defined in the database are listed, never escalated here: the PostgreSQL proxy looks
//! them up (`protocols::postgres::routines`) and adds `write` for volatile ones.

use super::Operation;

/// Exact names (after lowercasing and dropping any schema) and the operation they add.
const EXACT: &[(&str, Operation)] = &[
    ("pg_terminate_backend", Operation::Privileged),
    ("pg_cancel_backend", Operation::Privileged),
    ("pg_signal_backend", Operation::Privileged),
    ("pg_log_backend_memory_contexts", Operation::Privileged),
    ("pg_reload_conf", Operation::Privileged),
    ("pg_rotate_logfile", Operation::Privileged),
    ("pg_promote", Operation::Privileged),
    ("pg_switch_wal", Operation::Privileged),
    ("pg_switch_xlog", Operation::Privileged),
    ("pg_create_restore_point", Operation::Privileged),
    ("pg_backup_start", Operation::Privileged),
    ("pg_backup_stop", Operation::Privileged),
    ("pg_start_backup", Operation::Privileged),
    ("pg_stop_backup", Operation::Privileged),
    ("pg_wal_replay_pause", Operation::Privileged),
    ("pg_wal_replay_resume", Operation::Privileged),
    ("pg_stat_statements_reset", Operation::Privileged),
    ("pg_import_system_collations", Operation::Privileged),
    ("pg_read_file", Operation::Privileged),
    ("pg_read_binary_file", Operation::Privileged),
    ("pg_stat_file", Operation::Privileged),
    ("pg_logdir_ls", Operation::Privileged),
    ("lo_import", Operation::Privileged),
    ("lo_export", Operation::Privileged),
    // Large objects are outside every table rule (and their content outside the masking).
    ("lo_get", Operation::Privileged),
    ("loread", Operation::Privileged),
    ("lo_open", Operation::Privileged),
    ("pg_logical_emit_message", Operation::Privileged),
    ("pg_sync_replication_slots", Operation::Privileged),
    ("query_to_xmlschema", Operation::Privileged),
    ("ts_stat", Operation::Privileged),
    ("ts_rewrite", Operation::Privileged),
    ("connectby", Operation::Privileged),
    ("xpath_table", Operation::Privileged),
    ("get_raw_page", Operation::Privileged),
    ("bt_page_items", Operation::Privileged),
    ("pg_get_wal_record_info", Operation::Privileged),
    ("pg_get_wal_records_info", Operation::Privileged),
    ("pg_get_wal_block_info", Operation::Privileged),
    ("pg_get_wal_stats", Operation::Privileged),
    ("pg_background_launch", Operation::Privileged),
    // Planner statistics hold sample values of every table: see is_statistics_relation.
    ("pg_mcv_list_items", Operation::Privileged),
    ("pg_restore_relation_stats", Operation::Privileged),
    ("pg_restore_attribute_stats", Operation::Privileged),
    ("pg_clear_relation_stats", Operation::Privileged),
    ("pg_clear_attribute_stats", Operation::Privileged),
    ("set_config", Operation::Session),
    ("nextval", Operation::Write),
    ("setval", Operation::Write),
    ("pg_notify", Operation::Write),
    ("lo_create", Operation::Write),
    ("lo_creat", Operation::Write),
    ("lo_unlink", Operation::Write),
    ("lo_put", Operation::Write),
    ("lo_from_bytea", Operation::Write),
    ("lowrite", Operation::Write),
    ("lo_truncate", Operation::Write),
    ("lo_truncate64", Operation::Write),
];

/// Name prefixes and the operation they add.
const PREFIXES: &[(&str, Operation)] = &[
    ("dblink", Operation::Privileged),
    ("pg_ls_", Operation::Privileged),
    ("pg_file_", Operation::Privileged),
    ("pg_stat_reset", Operation::Privileged),
    ("pg_logical_slot_", Operation::Privileged),
    ("pg_replication_origin_", Operation::Privileged),
    ("query_to_xml", Operation::Privileged),
    ("cursor_to_xml", Operation::Privileged),
    ("table_to_xml", Operation::Privileged),
    ("schema_to_xml", Operation::Privileged),
    ("database_to_xml", Operation::Privileged),
    ("crosstab", Operation::Privileged),
    ("run_command_on_", Operation::Privileged),
    ("binary_upgrade_", Operation::Privileged),
    ("pg_advisory_", Operation::Utility),
    ("pg_try_advisory_", Operation::Utility),
];

/// The operation a call of `name` adds to its statement, if the function is on the
/// side-effecting list (see the table in this module's documentation). `name` may be
/// schema-qualified (`pg_catalog.pg_read_file`) and in any case; any schema is matched, so a
/// look-alike in another schema is treated like the built-in (fail closed).
pub fn is_side_effecting_function(name: &str) -> Option<Operation> {
    let base = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    let base = base.trim_matches('"');
    if let Some((_, op)) = EXACT.iter().find(|(n, _)| *n == base) {
        return Some(*op);
    }
    if base.contains("replication_slot") && base.starts_with("pg_") {
        return Some(Operation::Privileged);
    }
    PREFIXES
        .iter()
        .find(|(p, _)| base.starts_with(p))
        .map(|(_, op)| *op)
}

/// Functions that return what a system view shows (the view is built on them): a call reads
/// that view, so a table rule on the view applies to it too. `pg_stat_get_activity(NULL)`
/// is every session's query text, like `pg_stat_activity`.
const VIEW_FUNCTIONS: &[(&str, &str)] = &[
    ("pg_stat_get_activity", "pg_catalog.pg_stat_activity"),
    (
        "pg_stat_get_backend_activity",
        "pg_catalog.pg_stat_activity",
    ),
    ("pg_show_all_settings", "pg_catalog.pg_settings"),
    ("pg_show_all_file_settings", "pg_catalog.pg_file_settings"),
    ("pg_hba_file_rules", "pg_catalog.pg_hba_file_rules"),
    (
        "pg_ident_file_mappings",
        "pg_catalog.pg_ident_file_mappings",
    ),
    ("pg_prepared_statement", "pg_catalog.pg_prepared_statements"),
    ("pg_cursor", "pg_catalog.pg_cursors"),
    ("pg_stat_statements", "public.pg_stat_statements"),
];

/// The view a function call reads (see [`VIEW_FUNCTIONS`]), by its bare name.
pub(crate) fn view_of_function(name: &str) -> Option<&'static str> {
    let base = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    VIEW_FUNCTIONS
        .iter()
        .find(|(f, _)| *f == base.trim_matches('"'))
        .map(|(_, v)| *v)
}

/// Settings whose change through `SET`, `RESET` or `set_config` is privileged: they change who
/// the session acts as, switch off triggers and foreign keys, (`search_path`) change which
/// table an unqualified name is — table rules read unqualified names under the default search
/// path, so an agent that could move it would read `secret.people` under a rule for
/// `public.people` — or (`client_encoding`, which `SET NAMES` sets, and
/// `standard_conforming_strings`) change how the server splits the following statement text:
/// in SJIS a multi-byte character can swallow a quote's backslash, and with
/// `standard_conforming_strings` off `'\''` ends elsewhere, so a second statement could hide
/// from the classifier.
pub(crate) fn is_privileged_setting(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "role"
            | "session_authorization"
            | "session_replication_role"
            | "search_path"
            | "client_encoding"
            | "standard_conforming_strings"
    )
}

/// Whether a relation written by a statement is the `pg_settings` view, whose `UPDATE` rule
/// calls `set_config` for whatever setting the row names (`UPDATE pg_settings SET setting =
/// 'admin' WHERE name = 'role'`). `public.pg_settings` (or any other schema) is a plain table.
pub(crate) fn is_settings_view(relation: &str) -> bool {
    let lower = relation.to_ascii_lowercase();
    lower == "pg_settings" || lower == "pg_catalog.pg_settings"
}

/// The catalogs and views of the planner's statistics: `pg_statistic`, `pg_statistic_ext`,
/// `pg_statistic_ext_data` and the views on them, `pg_stats`, `pg_stats_ext`,
/// `pg_stats_ext_exprs`. They hold sample values of every analyzed column
/// (`most_common_vals`, `histogram_bounds`, …) of any table, named only by a string
/// (`WHERE tablename = 'credentials'`): outside every table rule and every column masking
/// rule. Reading (or writing) one is privileged. Matched unqualified (a `pg_*` name resolves
/// to `pg_catalog` first) or in `pg_catalog`, in any case; `public.pg_stats` is a plain table.
pub(crate) fn is_statistics_relation(relation: &str) -> bool {
    let lower = relation.to_ascii_lowercase();
    let base = lower.strip_prefix("pg_catalog.").unwrap_or(&lower);
    matches!(
        base,
        "pg_stats"
            | "pg_stats_ext"
            | "pg_stats_ext_exprs"
            | "pg_statistic"
            | "pg_statistic_ext"
            | "pg_statistic_ext_data"
    )
}
