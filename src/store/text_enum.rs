//! The state enums of `domain::state` as TEXT columns on both backends.
//! Rows carry the enums rather than strings, so a value the code does not
//! know fails the read with a clear error instead of travelling on, and the
//! one database spelling stays `as_str`/`FromStr`.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;

use crate::domain::{
    ConsentKind, DeliveryState, IssueStatus, ItemState, MatchedBy, OneOffState, ReportKind,
    ReportOutcome, ReportSource, RunState, SubscriptionState,
};

macro_rules! text_column {
    ($($name:ty),+ $(,)?) => {$(
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'static str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&'static str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }

        /// Compares with the database spelling: tests assert on what a row
        /// holds as they did when rows carried strings.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )+};
}

text_column!(
    SubscriptionState,
    ConsentKind,
    ItemState,
    IssueStatus,
    DeliveryState,
    RunState,
    OneOffState,
    ReportSource,
    ReportKind,
    ReportOutcome,
    MatchedBy
);
