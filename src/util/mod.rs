pub(crate) mod decimal;
pub(crate) mod inline;
pub(crate) mod time;
