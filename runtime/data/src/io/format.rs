//! The data file formats Quiver reads and writes.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A data file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// Comma- (or otherwise) separated values.
    Csv,
    /// JSON lines: one JSON object per line.
    Jsonl,
    /// The Arrow IPC file format (also read: the IPC stream format).
    Ipc,
}

/// The names `FromStr` accepts, for error messages and help texts.
pub const FORMAT_NAMES: &str = "parquet, csv, jsonl, ipc";

impl Format {
    /// Every format, in the order they are listed to users.
    pub const ALL: [Format; 4] = [Format::Parquet, Format::Csv, Format::Jsonl, Format::Ipc];

    /// Guesses the format from a path's extension (case-insensitive); `None` when unknown.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "arrow" | "ipc" | "feather" => Some(Format::Ipc),
            _ => None,
        }
    }

    /// The canonical file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Ipc => "arrow",
        }
    }

    /// The canonical name, as accepted by `FromStr` and printed by `Display`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Ipc => "ipc",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that `Format::from_str` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format \"{name}\"; expected one of {FORMAT_NAMES}")]
pub struct UnknownFormatName {
    /// The name as given.
    pub name: String,
}

impl FromStr for Format {
    type Err = UnknownFormatName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            "jsonl" | "json" => Ok(Format::Jsonl),
            "ipc" | "arrow" => Ok(Format::Ipc),
            _ => Err(UnknownFormatName {
                name: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_extensions() {
        let cases = [
            ("a.parquet", Some(Format::Parquet)),
            ("dir/a.PQ", Some(Format::Parquet)),
            ("a.csv", Some(Format::Csv)),
            ("a.jsonl", Some(Format::Jsonl)),
            ("a.ndjson", Some(Format::Jsonl)),
            ("a.json", Some(Format::Jsonl)),
            ("a.arrow", Some(Format::Ipc)),
            ("a.ipc", Some(Format::Ipc)),
            ("a.feather", Some(Format::Ipc)),
            ("a.txt", None),
            ("noext", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Format::from_path(Path::new(path)), expected, "{path}");
        }
    }

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("parquet".parse(), Ok(Format::Parquet));
        assert_eq!("CSV".parse(), Ok(Format::Csv));
        assert_eq!("json".parse(), Ok(Format::Jsonl));
        assert_eq!("arrow".parse(), Ok(Format::Ipc));
        let err = "xml".parse::<Format>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown format \"xml\"; expected one of parquet, csv, jsonl, ipc"
        );
    }

    #[test]
    fn display_round_trips_and_extensions_detect_back() {
        for format in Format::ALL {
            assert_eq!(format.to_string().parse(), Ok(format));
            let path = format!("x.{}", format.extension());
            assert_eq!(Format::from_path(Path::new(&path)), Some(format));
        }
    }
}
