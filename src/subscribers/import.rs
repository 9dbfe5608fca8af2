//! CSV import: streamed in chunks (constant memory however large the file),
//! validated row by row, deduplicated against the database rather than an
//! in-memory set, and written set-wise, one transaction per chunk.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::{SubscribeOutcome, SubscribeRequest, SubscriberError};
use crate::app::App;
use crate::domain::{EmailAddress, SubscriptionState, now_ms};
use crate::store::subscribers::{ConsentContext, ImportAction, ImportRow, ImportTarget};
use crate::store::{Newsletter, StoreError};

/// Rows per chunk, and per write transaction. Large enough that the
/// per-transaction costs (commit, the index pages each chunk dirties) are
/// spread thin; small enough that memory stays flat (a few MB per chunk, at
/// most three chunks alive; and each insert of a chunk is one statement
/// under SQLite's bind limit) and that `herald serve` writing to the same
/// database waits a fraction of a second for the lock, not seconds.
const CHUNK: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a CSV file with a header row: {message}")]
    NotCsv { path: String, message: String },
    #[error(
        "{path} has no `email` column (header: {header}). The first row must name the columns, e.g. `email,name`"
    )]
    NoEmailColumn { path: String, header: String },
    #[error(
        "{path}: the column `{column}` appears more than once in the header ({header}). Rename or remove the duplicate column and import again"
    )]
    DuplicateColumn {
        path: String,
        column: String,
        header: String,
    },
    #[error("{path}: reading failed at line {line}: {message}")]
    Read {
        path: String,
        line: u64,
        message: String,
    },
    #[error(transparent)]
    Subscriber(#[from] SubscriberError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub imported: u64,
    pub updated: u64,
    pub invalid: u64,
    pub suppressed: u64,
    pub duplicate: u64,
    pub confirmations_sent: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} / updated {} / skipped(invalid: {}, suppressed: {}, duplicate: {})",
            self.imported, self.updated, self.invalid, self.suppressed, self.duplicate
        )
    }
}

enum Chunk {
    Rows {
        /// Sorted by canonical address, each address once.
        rows: Vec<ImportRow>,
        rejects: Vec<(u64, String, String)>,
        /// Rows dropped as repeats of an address earlier in the same chunk.
        duplicates: u64,
        bytes_read: u64,
    },
    Failed(ImportError),
}

pub struct ImportOptions<'a> {
    pub confirmed: bool,
    pub newsletter: &'a Newsletter,
    /// Called after every chunk with (bytes read, report so far): progress bars.
    pub progress: &'a (dyn Fn(u64, &ImportReport) + Sync),
}

impl App {
    /// Imports `path`. Invalid rows never abort the import; they are written
    /// to `rejects` as `line,email,reason`. Import never resubscribes an
    /// address that unsubscribed or is suppressed.
    pub async fn import_subscribers(
        &self,
        path: &Path,
        options: ImportOptions<'_>,
        rejects: &mut (dyn Write + Send),
    ) -> Result<ImportReport, ImportError> {
        let display = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| ImportError::Open {
            path: display.clone(),
            source,
        })?;
        let source = format!(
            "import:{}",
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        self.import_subscribers_from(display, source, file, options, rejects)
            .await
    }

    /// The streaming importer over any blocking reader: a file, or an HTTP
    /// upload bridged to one. The reader is only ever used on a blocking
    /// thread, and at most two chunks wait in memory, so an upload of any
    /// size is imported in constant memory. `display` names the input in
    /// errors; `source` is recorded with each consent event.
    pub async fn import_subscribers_from(
        &self,
        display: String,
        source: String,
        input: impl std::io::Read + Send + 'static,
        options: ImportOptions<'_>,
        rejects: &mut (dyn Write + Send),
    ) -> Result<ImportReport, ImportError> {
        // The CSV parser is synchronous: it runs on a blocking thread and
        // hands validated chunks over a bounded channel.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
        let reader_task = tokio::task::spawn_blocking(move || {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(std::io::BufReader::with_capacity(1 << 16, input));
            let (columns, email_col, name_col, attribute_cols) =
                match read_header(&mut reader, &display) {
                    Ok(header) => header,
                    Err(e) => {
                        let _ = tx.blocking_send(Chunk::Failed(e));
                        return;
                    }
                };
            let path_for_errors = display;
            let mut record = csv::StringRecord::new();
            let mut rows = Vec::with_capacity(CHUNK);
            let mut rejected = Vec::new();
            loop {
                let more = match reader.read_record(&mut record) {
                    Ok(more) => more,
                    Err(e) => {
                        let line = e.position().map(|p| p.line()).unwrap_or(0);
                        // A broken line (bad quoting, invalid UTF-8) is a rejected row, not a fatal error.
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            let _ = tx.blocking_send(Chunk::Failed(ImportError::Read {
                                path: path_for_errors.clone(),
                                line,
                                message: e.to_string(),
                            }));
                            return;
                        }
                        rejected.push((line, String::new(), format!("unreadable CSV row: {e}")));
                        true
                    }
                };
                if more && !record.is_empty() {
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    match parse_row(&record, columns.len(), email_col, name_col, &attribute_cols) {
                        Ok((email, name, attributes)) => {
                            rows.push(ImportRow::new(email, name, attributes))
                        }
                        Err((raw, reason)) => rejected.push((line, raw, reason)),
                    }
                }
                if rows.len() >= CHUNK
                    || rejected.len() >= CHUNK
                    || (!more && (!rows.is_empty() || !rejected.is_empty()))
                {
                    let bytes_read = reader.position().byte();
                    let mut chunk_rows = std::mem::take(&mut rows);
                    let duplicates = sort_and_dedup(&mut chunk_rows);
                    let chunk = Chunk::Rows {
                        rows: chunk_rows,
                        rejects: std::mem::take(&mut rejected),
                        duplicates,
                        bytes_read,
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return;
                    }
                    rows.reserve(CHUNK);
                }
                if !more {
                    return;
                }
            }
        });

        let import_id = uuid::Uuid::new_v4().simple().to_string();
        let mut report = ImportReport::default();
        while let Some(chunk) = rx.recv().await {
            let (rows, rejected, bytes_read) = match chunk {
                Chunk::Rows {
                    rows,
                    rejects,
                    duplicates,
                    bytes_read,
                } => {
                    report.duplicate += duplicates;
                    (rows, rejects, bytes_read)
                }
                Chunk::Failed(e) => return Err(e),
            };
            for (line, raw, reason) in &rejected {
                report.invalid += 1;
                let _ = writeln!(rejects, "{line},{},{}", csv_field(raw), csv_field(reason));
            }
            let pending = self
                .import_chunk(rows, &options, &import_id, &source, &mut report)
                .await?;
            for email in pending {
                report.confirmations_sent += u64::from(
                    self.import_confirmation(&email, options.newsletter, &source)
                        .await?,
                );
            }
            (options.progress)(bytes_read, &report);
        }
        let _ = reader_task.await;
        Ok(report)
    }

    /// Writes one chunk; returns the addresses that became pending and need a confirmation mail.
    async fn import_chunk(
        &self,
        rows: Vec<ImportRow>,
        options: &ImportOptions<'_>,
        import_id: &str,
        source: &str,
        report: &mut ImportReport,
    ) -> Result<Vec<EmailAddress>, StoreError> {
        let target_state = if options.confirmed {
            SubscriptionState::Confirmed
        } else {
            SubscriptionState::Pending
        };
        // Import never resubscribes: an address that unsubscribed, bounced or
        // complained stays out until it confirms a fresh double opt-in.
        let decide = |state: Option<SubscriptionState>| match state {
            Some(
                SubscriptionState::Unsubscribed
                | SubscriptionState::Bounced
                | SubscriptionState::Complained,
            ) => ImportAction::Refuse,
            Some(SubscriptionState::Confirmed) => ImportAction::Update,
            Some(s) if s == target_state => ImportAction::Update,
            _ => ImportAction::UpdateAndSubscribe,
        };
        let target = ImportTarget {
            newsletter_id: options.newsletter.id,
            state: target_state,
            import_id,
            source,
            now: now_ms(),
        };
        let outcome = self.db.import_chunk(rows, &target, &decide).await?;
        report.imported += outcome.imported;
        report.updated += outcome.updated;
        report.suppressed += outcome.suppressed;
        report.duplicate += outcome.duplicate;
        Ok(outcome.pending)
    }

    async fn import_confirmation(
        &self,
        email: &EmailAddress,
        newsletter: &Newsletter,
        source: &str,
    ) -> Result<bool, SubscriberError> {
        let context = ConsentContext {
            source: source.to_owned(),
            method: Some("csv".into()),
            ..Default::default()
        };
        let req = SubscribeRequest {
            email,
            name: None,
            newsletter,
            context,
        };
        match self.request_subscription(req).await? {
            SubscribeOutcome::ConfirmationSent(mail) => Ok(self.send_confirmation(&mail).await),
            _ => Ok(false),
        }
    }
}

/// The extra columns, each as its JSON key with the `:` (`"city":`), in the
/// order their names sort: the order `serde_json::Map` writes them in.
type AttributeColumns = Vec<(usize, String)>;

/// The header row: the lower-cased column names, the `email` column, the
/// `name` column if any, and the attribute columns.
fn read_header<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    display: &str,
) -> Result<(Vec<String>, usize, Option<usize>, AttributeColumns), ImportError> {
    let header = reader
        .headers()
        .map_err(|e| ImportError::NotCsv {
            path: display.to_owned(),
            message: e.to_string(),
        })?
        .clone();
    let columns: Vec<String> = header
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_lowercase())
        .collect();
    let mut seen_columns = HashSet::new();
    if let Some(dup) = columns.iter().find(|c| !seen_columns.insert(c.as_str())) {
        return Err(ImportError::DuplicateColumn {
            path: display.to_owned(),
            column: dup.clone(),
            header: columns.join(","),
        });
    }
    let email_col =
        columns
            .iter()
            .position(|c| c == "email")
            .ok_or_else(|| ImportError::NoEmailColumn {
                path: display.to_owned(),
                header: columns.join(","),
            })?;
    let name_col = columns.iter().position(|c| c == "name");
    let mut attribute_cols: AttributeColumns = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != email_col && Some(*i) != name_col)
        .map(|(i, c)| (i, format!("{}:", serde_json::Value::from(c.as_str()))))
        .collect();
    attribute_cols.sort_by(|a, b| columns[a.0].cmp(&columns[b.0]));
    Ok((columns, email_col, name_col, attribute_cols))
}

/// Sorts a chunk by canonical address (the order of the address index, see
/// `Db::import_chunk`) and keeps the first row of each address: `Ann@` and
/// `ann@` in one file are one reader. Returns how many rows were dropped.
fn sort_and_dedup(rows: &mut Vec<ImportRow>) -> u64 {
    // Stable: among rows of one address, the file's first stays first.
    rows.sort_by(|a, b| a.canonical().cmp(b.canonical()));
    let before = rows.len();
    rows.dedup_by(|later, earlier| later.canonical() == earlier.canonical());
    (before - rows.len()) as u64
}

type RowError = (String, String);

fn parse_row(
    record: &csv::StringRecord,
    width: usize,
    email_col: usize,
    name_col: Option<usize>,
    attribute_cols: &[(usize, String)],
) -> Result<(EmailAddress, Option<String>, String), RowError> {
    let raw = record.get(email_col).unwrap_or("");
    if record.len() != width {
        return Err((
            raw.to_owned(),
            format!("expected {width} fields, found {}", record.len()),
        ));
    }
    let email = EmailAddress::parse(raw).map_err(|e| (raw.to_owned(), e.to_string()))?;
    let name = name_col
        .and_then(|i| record.get(i))
        .filter(|n| !n.is_empty());
    let name = super::clean_name(name)
        .map_err(|e| (raw.to_owned(), e.to_string()))?
        .map(str::to_owned);
    // The JSON object written directly (keys pre-quoted, in sorted order):
    // the same text as a `serde_json::Map`, without a map per row.
    let mut attributes = String::with_capacity(2 + 24 * attribute_cols.len());
    attributes.push('{');
    for (i, key) in attribute_cols {
        let Some(value) = record.get(*i).filter(|v| !v.is_empty()) else {
            continue;
        };
        if attributes.len() > 1 {
            attributes.push(',');
        }
        attributes.push_str(key);
        push_json_string(&mut attributes, value);
    }
    attributes.push('}');
    Ok((email, name, attributes))
}

/// Appends `value` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(value).to_string());
    }
}

/// Quotes a value for the rejects CSV.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes written by hand are the text `serde_json::Map` wrote
    /// before (sorted keys, the same escaping), so stored rows compare equal.
    #[test]
    fn attributes_are_the_json_a_map_writes() {
        let columns = ["zeta", "email", "city", "name", "a\"key", "plan"];
        let data = std::io::Cursor::new(format!(
            "{}\nz,ann@example.com,\"Quote \"\" and \\ back\",Ann,tab\there,\nz,bob@example.com,Астана,,\u{7f}é,pro\n",
            columns.join(",")
        ));
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(data);
        let (columns, email_col, name_col, attribute_cols) =
            read_header(&mut reader, "test.csv").unwrap();
        for record in reader.records() {
            let record = record.unwrap();
            let (_, _, got) =
                parse_row(&record, columns.len(), email_col, name_col, &attribute_cols).unwrap();
            let mut map = serde_json::Map::new();
            for (i, value) in record.iter().enumerate() {
                if i != email_col && Some(i) != name_col && !value.is_empty() {
                    map.insert(columns[i].clone(), serde_json::Value::from(value));
                }
            }
            assert_eq!(got, serde_json::Value::Object(map).to_string());
        }
    }

    #[test]
    fn a_chunk_is_sorted_and_keeps_the_first_row_of_each_address() {
        let row = |email: &str, name: &str| {
            ImportRow::new(
                EmailAddress::parse(email).unwrap(),
                Some(name.into()),
                "{}".into(),
            )
        };
        let mut rows = vec![
            row("b@example.com", "first b"),
            row("Ann@example.com", "first ann"),
            row("B@example.com", "second b"),
            row("ann@EXAMPLE.com", "second ann"),
        ];
        assert_eq!(sort_and_dedup(&mut rows), 2);
        let kept: Vec<_> = rows.iter().map(|r| r.name.as_deref().unwrap()).collect();
        assert_eq!(kept, ["first ann", "first b"]);
    }
}
