//! Subscribers a page at a time: the API's cursor-paged list and its CSV
//! export, which streams page after page so that a list of any length is
//! exported in constant memory (and without holding one connection and
//! snapshot for the whole download, as a single streamed query would).

use futures::Stream;

use crate::app::App;
use crate::domain::{SubscriptionState, ms_to_datetime};
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
                    write_record(&mut w, EXPORT_HEADER)?;
                }
                let rows = app
                    .subscribers_page(&newsletter, state, after, EXPORT_PAGE)
                    .await?;
                let next = (rows.len() as i64 == EXPORT_PAGE)
                    .then(|| rows.last().map(|r| r.id))
                    .flatten();
                for s in rows {
                    let row = [
                        s.email,
                        s.name.unwrap_or_default(),
                        s.state.to_string(),
                        rfc3339(Some(s.created_at)),
                        rfc3339(s.confirmed_at),
                        rfc3339(s.unsubscribed_at),
                        s.attributes,
                    ];
                    if raw {
                        write_record(&mut w, &row)?;
                    } else {
                        let cells = row.each_ref().map(|c| neutralise_formula(c));
                        write_record(&mut w, cells.iter().map(|c| c.as_bytes()))?;
                    }
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

fn write_record<I, T>(w: &mut csv::Writer<Vec<u8>>, record: I) -> Result<(), StoreError>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    // Writing to memory fails only on a CSV encoding error.
    w.write_record(record)
        .map_err(|e| StoreError::Corrupt(format!("CSV row: {e}")))
}

fn rfc3339(ms: Option<i64>) -> String {
    ms.map(|m| ms_to_datetime(m).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
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
