//! Bounded property tests: the in-suite versions of the fuzz targets in `runtime/fuzz/`.
//!
//! The structured inputs, the builders and the naive models are shared with the fuzz targets
//! (`runtime/fuzz/gen/`); here proptest generates them. Two things must hold whatever a plugin
//! returns or a pipeline file says: no panic, and whatever is accepted is right — valid Arrow
//! with the plan's schema, row count and data (plugin output), or a pipeline whose values are
//! what the file says (pipeline files). Besides arbitrary inputs, targeted generators produce
//! valid outputs and pipelines (which must be accepted) and valid outputs with one defect
//! (which must be rejected).
//!
//! Each property runs `PROPTEST_CASES` cases (default 256); no failure files are written:
//! a failure found once becomes a named regression test below.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use quiver::abi::ParamValue;
use quiver::pipeline::{parse_cli_param, Pipeline};
use quiver::sandbox::Limits;

#[path = "../../runtime/fuzz/gen/plugin_output.rs"]
mod output_gen;

#[path = "../../runtime/fuzz/gen/pipeline_file.rs"]
mod file_gen;

#[path = "../../runtime/fuzz/gen/untrusted_text.rs"]
mod text_gen;

use file_gen::{Cli, Doc, Edit, FileCase, Item, Key, Str, Value, LIMIT_KEYS};
use output_gen::{
    Bitmap, Cap, Case, ColumnDesc, FieldDesc, InputColumn, InputDesc, InputType, Layout, Len, Name,
    Offsets, OutputDesc, PlanDesc, Rows, Target, Text, Ty, Tz, Unit,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin output: strategies for the shared description types

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        9 => any::<u8>().prop_map(Name::Pool),
        1 => "\\PC{0,4}".prop_map(Name::Raw),
    ]
}

/// Any type, time zones drawn from any text.
fn ty() -> impl Strategy<Value = Ty> {
    ty_with(prop_oneof![
        Just(Tz::None),
        Just(Tz::Utc),
        Just(Tz::Offset),
        "\\PC{0,6}".prop_map(Tz::Raw),
    ])
}

/// Any type a valid plan may declare: time zones are names or offsets in form.
fn valid_ty() -> impl Strategy<Value = Ty> {
    ty_with(prop_oneof![
        Just(Tz::None),
        Just(Tz::Utc),
        Just(Tz::Offset),
        "[A-Za-z_]{1,10}(/[A-Za-z_+-]{1,10}){0,2}".prop_map(Tz::Raw),
    ])
}

fn ty_with(tz: impl Strategy<Value = Tz> + Clone + 'static) -> impl Strategy<Value = Ty> {
    let unit = select(vec![Unit::S, Unit::Ms, Unit::Us, Unit::Ns]);
    prop_oneof![
        6 => select(vec![
            Ty::Boolean,
            Ty::Int8,
            Ty::Int16,
            Ty::Int32,
            Ty::Int64,
            Ty::UInt8,
            Ty::UInt16,
            Ty::UInt32,
            Ty::UInt64,
            Ty::Float32,
            Ty::Float64,
            Ty::Utf8,
            Ty::Binary,
            Ty::Date32,
        ]),
        1 => (unit, tz).prop_map(|(u, z)| Ty::Timestamp(u, z)),
    ]
}

fn input_type() -> impl Strategy<Value = InputType> {
    prop_oneof![
        3 => ty().prop_map(InputType::Wit),
        1 => select(vec![
            InputType::LargeUtf8,
            InputType::Utf8View,
            InputType::LargeBinary,
            InputType::Dictionary,
            InputType::List,
            InputType::Struct,
            InputType::Decimal128,
            InputType::FixedSizeBinary,
            InputType::Null,
        ]),
    ]
}

fn input_rows() -> impl Strategy<Value = u8> {
    prop_oneof![0u8..10, any::<u8>()]
}

fn input() -> impl Strategy<Value = InputDesc> {
    let column = (name(), input_type(), any::<bool>(), any::<u64>()).prop_map(
        |(name, ty, nullable, seed)| InputColumn {
            name,
            ty,
            nullable,
            seed,
        },
    );
    (input_rows(), 0u8..9, vec(column, 0..5)).prop_map(|(rows, offset, columns)| InputDesc {
        rows,
        offset,
        columns,
    })
}

fn plan() -> impl Strategy<Value = PlanDesc> {
    let field = (name(), ty(), any::<bool>(), option::weighted(0.4, name())).prop_map(
        |(name, ty, nullable, from)| FieldDesc {
            name,
            ty,
            nullable,
            from,
        },
    );
    (vec(name(), 0..3), vec(field, 0..5)).prop_map(|(reads, output)| PlanDesc { reads, output })
}

fn len() -> impl Strategy<Value = Len> {
    prop_oneof![
        3 => Just(Len::Exact),
        1 => (0u8..10).prop_map(Len::More),
        1 => (0u8..10).prop_map(Len::Fewer),
    ]
}

fn bitmap() -> impl Strategy<Value = Bitmap> {
    (len(), vec(any::<u8>(), 0..4)).prop_map(|(len, pattern)| Bitmap { len, pattern })
}

fn column() -> impl Strategy<Value = ColumnDesc> {
    let layout = select(vec![
        Layout::Bits,
        Layout::I8,
        Layout::I16,
        Layout::I32,
        Layout::I64,
        Layout::U8,
        Layout::U16,
        Layout::U32,
        Layout::U64,
        Layout::F32,
        Layout::F64,
        Layout::Bytes,
    ]);
    let offsets = prop_oneof![
        4 => Just(Offsets::Auto),
        1 => Just(Offsets::Absent),
        1 => (any::<u16>(), -4i32..64).prop_map(|(at, value)| Offsets::Corrupt { at, value }),
        1 => len().prop_map(Offsets::Count),
        1 => vec(-2i32..40, 0..12).prop_map(Offsets::Raw),
    ];
    let target = prop_oneof![
        3 => any::<u8>().prop_map(Target::Planned),
        1 => name().prop_map(Target::Named),
    ];
    (
        target,
        option::weighted(0.2, ty()),
        option::weighted(0.15, layout),
        len(),
        option::of(bitmap()),
        offsets,
        select(vec![Text::Ascii, Text::Unicode, Text::Bytes]),
        any::<u64>(),
    )
        .prop_map(
            |(target, ty, layout, len, validity, offsets, text, seed)| ColumnDesc {
                target,
                ty,
                layout,
                len,
                validity,
                offsets,
                text,
                seed,
            },
        )
}

fn cap() -> impl Strategy<Value = Cap> {
    prop_oneof![
        3 => Just(Cap::Huge),
        1 => Just(Cap::Exact),
        1 => Just(Cap::Under),
        1 => any::<u16>().prop_map(Cap::Value),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let rows = prop_oneof![
        1 => Just(Rows::Input),
        3 => Just(Rows::Selected),
        1 => (-3i8..3).prop_map(Rows::Delta),
        1 => (0u32..300).prop_map(Rows::Value),
        1 => any::<u32>().prop_map(Rows::Value),
    ];
    let output = (
        rows,
        option::of(bitmap()),
        vec(column(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(rows, selection, columns, fill)| OutputDesc {
            rows,
            selection,
            columns,
            fill,
        });
    (input(), plan(), output, (cap(), cap())).prop_map(|(input, plan, output, caps)| Case {
        input,
        plan,
        output,
        caps,
    })
}

/// A case the host must accept: unique names, a plan that only names existing columns, a
/// consistent selection, and one well-formed column per computed field (with the slack the
/// contract allows: extra bytes in bitmaps, bits and string data), in any order.
fn valid_case(allow_fill: bool) -> impl Strategy<Value = Case> {
    let inputs = (
        input_rows(),
        0u8..9,
        vec((input_type(), any::<bool>(), any::<u64>()), 0..6),
    )
        .prop_map(|(rows, offset, cols)| InputDesc {
            rows,
            offset,
            columns: cols
                .into_iter()
                .enumerate()
                .map(|(i, (ty, nullable, seed))| InputColumn {
                    name: Name::Pool(i as u8),
                    ty,
                    nullable,
                    seed,
                })
                .collect(),
        });
    let outputs = vec(
        (
            any::<bool>(),
            valid_ty(),
            any::<bool>(),
            any::<u8>(),
            0u8..3,
            any::<u64>(),
        ),
        0..6,
    );
    let selection = option::of(
        (
            prop_oneof![Just(Len::Exact), (1u8..3).prop_map(Len::More)],
            vec(any::<u8>(), 0..5),
        )
            .prop_map(|(len, pattern)| Bitmap { len, pattern }),
    );
    (
        inputs,
        vec(any::<u8>(), 0..4),
        outputs,
        selection,
        any::<bool>(),
        any::<bool>().prop_map(move |f| f && allow_fill),
    )
        .prop_map(|(input, reads, outputs, selection, reverse, fill)| {
            let n = input.columns.len();
            let readable: Vec<usize> = (0..n).filter(|&i| input.columns[i].ty.readable()).collect();
            let reads = if readable.is_empty() {
                vec![]
            } else {
                reads
                    .iter()
                    .map(|&r| Name::Pool(readable[r as usize % readable.len()] as u8))
                    .collect()
            };
            let mut fields = Vec::new();
            let mut columns = Vec::new();
            for (i, (pass, ty, nullable, from, slack, seed)) in outputs.into_iter().enumerate() {
                let name = Name::Raw(format!("o{i}"));
                if pass && n > 0 {
                    let from = Some(Name::Pool(from % n as u8));
                    fields.push(FieldDesc {
                        name,
                        ty,
                        nullable,
                        from,
                    });
                    continue;
                }
                let mut c = ColumnDesc::valid(i as u8, nullable, seed);
                if matches!(ty, Ty::Boolean | Ty::Utf8 | Ty::Binary) {
                    c.len = Len::More(slack);
                }
                if let Some(v) = &mut c.validity {
                    v.len = Len::More(slack);
                } else if !nullable && slack == 2 {
                    // A validity bitmap without nulls is fine on a non-nullable column.
                    c.validity = Some(Bitmap {
                        len: Len::Exact,
                        pattern: vec![],
                    });
                }
                fields.push(FieldDesc {
                    name,
                    ty,
                    nullable,
                    from: None,
                });
                columns.push(c);
            }
            if fill {
                // Let the builder make them.
                columns.clear();
            }
            if reverse {
                columns.reverse();
            }
            Case {
                input,
                plan: PlanDesc {
                    reads,
                    output: fields,
                },
                output: OutputDesc {
                    rows: Rows::Selected,
                    selection,
                    columns,
                    fill,
                },
                caps: (Cap::Exact, Cap::Exact),
            }
        })
}

/// One defect that makes a valid output invalid.
#[derive(Debug, Clone, Copy)]
enum Defect {
    DropColumn,
    DuplicateColumn,
    ExtraColumn,
    WrongType,
    ShortValues,
    NullInNonNullable,
    RowsOff,
    ShortSelection,
}

/// Every defect, in the order `one_defect_is_rejected` tries them.
const DEFECTS: [Defect; 8] = [
    Defect::DropColumn,
    Defect::DuplicateColumn,
    Defect::ExtraColumn,
    Defect::WrongType,
    Defect::ShortValues,
    Defect::NullInNonNullable,
    Defect::RowsOff,
    Defect::ShortSelection,
];

/// Applies a defect to a valid case (with all columns explicit), if it applies to that case:
/// returns whether the result must be rejected.
fn apply_defect(case: &mut Case, defect: Defect, pick: usize) -> bool {
    let rows = case.input.rows as usize; // Rows::Selected: at most this.
    let fields = &case.plan.output;
    let computed: Vec<usize> = (0..fields.len())
        .filter(|&i| fields[i].from.is_none())
        .collect();
    let cols = &mut case.output.columns;
    let pick_col = |cols: &Vec<ColumnDesc>| (!cols.is_empty()).then(|| pick % cols.len());
    let field_of = |c: &ColumnDesc| match c.target {
        Target::Planned(i) => fields[i as usize].clone(),
        Target::Named(_) => unreachable!(),
    };
    let selected = case.output.selection.as_ref().map(|s| {
        let bytes = s.bytes(rows);
        (0..rows).filter(|&i| output_gen::bit(&bytes, i)).count()
    });
    let out_rows = selected.unwrap_or(rows);
    match defect {
        Defect::DropColumn => match pick_col(cols) {
            Some(i) => {
                cols.remove(i);
                true
            }
            None => false,
        },
        Defect::DuplicateColumn => match pick_col(cols) {
            Some(i) => {
                let c = cols[i].clone();
                cols.push(c);
                true
            }
            None => false,
        },
        Defect::ExtraColumn => {
            cols.push(ColumnDesc {
                target: Target::Named(Name::Raw("not-planned".into())),
                ..ColumnDesc::valid(0, true, pick as u64)
            });
            true
        }
        Defect::WrongType => match pick_col(cols) {
            Some(i) => {
                let planned = field_of(&cols[i]).ty;
                cols[i].ty = Some(if planned == Ty::Int64 {
                    Ty::Date32
                } else {
                    Ty::Int64
                });
                true
            }
            None => false,
        },
        Defect::ShortValues => match pick_col(cols) {
            Some(i) if out_rows > 0 => {
                if field_of(&cols[i]).ty.var_width() {
                    cols[i].offsets = Offsets::Count(Len::Fewer(1));
                } else {
                    cols[i].len = Len::Fewer(1);
                }
                true
            }
            _ => false,
        },
        Defect::NullInNonNullable => {
            let target = cols
                .iter()
                .position(|c| !field_of(c).nullable)
                .filter(|_| out_rows > 0);
            match target {
                Some(i) => {
                    cols[i].validity = Some(Bitmap {
                        len: Len::Exact,
                        pattern: vec![0],
                    });
                    true
                }
                None => false,
            }
        }
        Defect::RowsOff => {
            // Only a selection or a passthrough pins the row count; computed columns follow it.
            let pinned = case.output.selection.is_some() || computed.len() < fields.len();
            case.output.rows = Rows::Delta(if pick.is_multiple_of(2) || out_rows == 0 {
                1
            } else {
                -1
            });
            pinned
        }
        Defect::ShortSelection => match &mut case.output.selection {
            Some(s) if rows > 0 => {
                s.len = Len::Fewer(1);
                true
            }
            _ => false,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Pipeline files: strategies

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        8 => any::<u8>().prop_map(Key::Known),
        1 => "\\PC{0,6}".prop_map(Key::Raw),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => any::<i64>().prop_map(Value::Int),
        3 => (-3i8..100).prop_map(Value::Small),
        1 => any::<f64>().prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Bool),
        4 => any::<u8>().prop_map(|i| Value::Str(Str::Known(i))),
        1 => "\\PC{0,8}".prop_map(|s| Value::Str(Str::Raw(s))),
        1 => any::<u8>().prop_map(Value::Datetime),
        1 => "\\PC{0,6}".prop_map(Value::Raw),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..4).prop_map(Value::Table),
        ]
    })
}

/// Sections of the pipeline format with pairs of known keys, a minimal valid skeleton more
/// often than not, and arbitrary lines here and there.
fn doc() -> impl Strategy<Value = Doc> {
    let header = prop_oneof![
        Just(Item::Table(vec![Key::Known(1)])),       // [source]
        Just(Item::Table(vec![Key::Known(8)])),       // [partition]
        Just(Item::Table(vec![Key::Known(15)])),      // [limits]
        Just(Item::ArrayTable(vec![Key::Known(21)])), // [[plugin]]
        Just(Item::Table(vec![Key::Known(21), Key::Known(24)])), // [plugin.params]
        Just(Item::Table(vec![Key::Known(21), Key::Known(15)])), // [plugin.limits]
        Just(Item::Table(vec![Key::Known(25)])),      // [sink]
        vec(key(), 1..3).prop_map(Item::Table),
        vec(key(), 1..3).prop_map(Item::ArrayTable),
    ];
    let item = prop_oneof![
        8 => (vec(key(), 1..3), value()).prop_map(|(k, v)| Item::Pair(k, v)),
        1 => "\\PC{0,10}".prop_map(Item::Noise),
    ];
    (vec((header, vec(item, 0..5)), 0..6), any::<bool>()).prop_map(|(sections, skeleton)| {
        let mut items = Vec::new();
        if skeleton {
            // [source] paths = ["in/*.csv"]
            items.push(Item::Table(vec![Key::Known(1)]));
            items.push(Item::Pair(
                vec![Key::Known(2)],
                Value::Array(vec![Value::Str(Str::Known(11))]),
            ));
        }
        for (h, body) in sections {
            items.push(h);
            items.extend(body);
        }
        if skeleton {
            // [sink] path = "out.parquet"
            items.push(Item::Table(vec![Key::Known(25)]));
            items.push(Item::Pair(vec![Key::Known(23)], Value::Str(Str::Known(13))));
        }
        Doc { items }
    })
}

fn cli() -> impl Strategy<Value = Cli> {
    prop_oneof![
        2 => (key(), value()).prop_map(|(k, v)| Cli::Pair(k, v)),
        1 => "\\PC{0,12}".prop_map(Cli::Raw),
        1 => ("[a-z ]{0,5}", "\\PC{0,10}").prop_map(|(n, v)| Cli::Raw(format!("{n}={v}"))),
    ]
}

fn file_case() -> impl Strategy<Value = FileCase> {
    let edit = (any::<u16>(), 0u8..4, "\\PC{0,3}").prop_map(|(at, delete, insert)| Edit {
        at,
        delete,
        insert,
    });
    (doc(), vec(edit, 0..3), vec(cli(), 0..3)).prop_map(|(doc, edits, cli)| FileCase {
        doc,
        edits,
        cli,
    })
}

/// A parameter value of the contract.
#[derive(Debug, Clone)]
enum P {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl P {
    fn toml(&self) -> String {
        let q = |s: &String| file_gen::quote(s);
        match self {
            P::Bool(b) => b.to_string(),
            P::Int(i) => i.to_string(),
            P::Float(f) => file_gen::render_float(*f),
            P::Text(s) => q(s),
            P::List(l) => format!("[{}]", l.iter().map(q).collect::<Vec<_>>().join(", ")),
            P::Map(m) => format!(
                "{{ {} }}",
                m.iter()
                    .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn matches(&self, v: &ParamValue) -> bool {
        match (self, v) {
            (P::Bool(a), ParamValue::Boolean(b)) => a == b,
            (P::Int(a), ParamValue::Int(b)) => a == b,
            (P::Float(a), ParamValue::Float(b)) => {
                (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
            }
            (P::Text(a), ParamValue::Text(b)) => a == b,
            (P::List(a), ParamValue::TextList(b)) => a == b,
            (P::Map(a), ParamValue::TextMap(b)) => {
                let b: BTreeMap<String, String> = b.iter().cloned().collect();
                *a == b && a.len() == b.len()
            }
            _ => false,
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,8}",
        1 => "[\\x00-\\x1f\"\\\\'#=\\[\\]{}]{0,4}",
    ]
}

fn param() -> impl Strategy<Value = P> {
    prop_oneof![
        any::<bool>().prop_map(P::Bool),
        any::<i64>().prop_map(P::Int),
        any::<f64>().prop_map(P::Float),
        text().prop_map(P::Text),
        vec(text(), 0..3).prop_map(P::List),
        btree_map(text(), text(), 0..3).prop_map(P::Map),
    ]
}

/// Overrides of some limits, each in its documented range (ends included).
fn limit_overrides() -> impl Strategy<Value = BTreeMap<usize, u64>> {
    let one = (0..LIMIT_KEYS.len()).prop_flat_map(|k| {
        let (_, min, max) = LIMIT_KEYS[k];
        let (min, max) = (min as u64, max as u64);
        let v = prop_oneof![Just(min), Just(max), min..=max];
        (Just(k), v)
    });
    vec(one, 0..4).prop_map(|pairs| pairs.into_iter().collect())
}

#[derive(Debug, Clone)]
struct PluginModel {
    /// `name = …` (else `path = …`).
    by_name: bool,
    label: String,
    params: BTreeMap<String, P>,
    /// `[plugin.params]` instead of an inline table.
    params_table: bool,
    limits: Option<BTreeMap<usize, u64>>,
}

#[derive(Debug, Clone)]
struct PartitionModel {
    range: bool,
    by: Vec<String>,
    count: Option<usize>,
    hash: usize,
    boundaries: Option<Vec<i64>>,
}

#[derive(Debug, Clone)]
struct PipelineModel {
    workers: Option<usize>,
    paths: Vec<String>,
    format: Option<usize>,
    batch_size: Option<u32>,
    partition: Option<PartitionModel>,
    limits: BTreeMap<usize, u64>,
    plugins: Vec<PluginModel>,
    sink: String,
    overwrite: Option<bool>,
}

const FORMATS: [&str; 4] = ["parquet", "csv", "jsonl", "ipc"];
const HASHES: [&str; 4] = ["xxh3", "murmur3", "fnv1a", "md5"];

fn pipeline_model() -> impl Strategy<Value = PipelineModel> {
    let path = prop_oneof![
        select(vec!["in/*.csv", "data/", "/abs/x.parquet", "a b.jsonl"]).prop_map(String::from),
        "\\PC{1,8}",
    ];
    let column = "[a-z_][a-z0-9_ ]{0,5}";
    let partition = (
        any::<bool>(),
        vec(column, 1..3),
        option::of(1usize..64),
        0..HASHES.len(),
        option::of(vec(any::<i64>(), 0..3)),
    )
        .prop_map(|(range, mut by, count, hash, boundaries)| {
            if range {
                by.truncate(1);
            }
            PartitionModel {
                range,
                by,
                count,
                hash,
                boundaries: boundaries.filter(|_| range),
            }
        });
    let plugin = (
        any::<bool>(),
        "[a-z][a-z0-9_./-]{0,8}",
        btree_map("[a-z][a-z0-9_-]{0,6}", param(), 0..4),
        any::<bool>(),
        option::of(limit_overrides()),
    )
        .prop_map(
            |(by_name, label, params, params_table, limits)| PluginModel {
                by_name,
                label,
                params,
                params_table,
                limits,
            },
        );
    (
        option::of(1usize..64),
        vec(path.clone(), 1..3),
        option::of(0..FORMATS.len()),
        option::of(1..=u32::MAX),
        option::of(partition),
        limit_overrides(),
        vec(plugin, 0..4),
        path,
        option::of(any::<bool>()),
    )
        .prop_map(
            |(workers, paths, format, batch_size, partition, limits, plugins, sink, overwrite)| {
                PipelineModel {
                    workers,
                    paths,
                    format,
                    batch_size,
                    partition,
                    limits,
                    plugins,
                    sink,
                    overwrite,
                }
            },
        )
}

fn render_pipeline(m: &PipelineModel) -> String {
    use std::fmt::Write;
    let q = |s: &str| file_gen::quote(s);
    let list = |l: &[String]| {
        let items: Vec<String> = l.iter().map(|s| q(s)).collect();
        format!("[{}]", items.join(", "))
    };
    let limits = |l: &BTreeMap<usize, u64>, sep: &str| {
        l.iter()
            .map(|(k, v)| format!("{} = {v}", LIMIT_KEYS[*k].0))
            .collect::<Vec<_>>()
            .join(sep)
    };
    let mut t = String::new();
    if let Some(w) = m.workers {
        writeln!(t, "workers = {w}").unwrap();
    }
    writeln!(t, "[source]\npaths = {}", list(&m.paths)).unwrap();
    if let Some(f) = m.format {
        writeln!(t, "format = \"{}\"", FORMATS[f]).unwrap();
    }
    if let Some(b) = m.batch_size {
        writeln!(t, "batch-size = {b}").unwrap();
    }
    if let Some(p) = &m.partition {
        writeln!(t, "[partition]\nby = {}", list(&p.by)).unwrap();
        if p.range {
            writeln!(t, "scheme = \"range\"").unwrap();
        } else {
            writeln!(t, "hash = \"{}\"", HASHES[p.hash]).unwrap();
        }
        if let Some(c) = p.count {
            writeln!(t, "count = {c}").unwrap();
        }
        if let Some(b) = &p.boundaries {
            let b: Vec<String> = b.iter().map(i64::to_string).collect();
            writeln!(t, "boundaries = [{}]", b.join(", ")).unwrap();
        }
    }
    if !m.limits.is_empty() {
        writeln!(t, "[limits]\n{}", limits(&m.limits, "\n")).unwrap();
    }
    for p in &m.plugins {
        let key = if p.by_name { "name" } else { "path" };
        writeln!(t, "[[plugin]]\n{key} = {}", q(&p.label)).unwrap();
        if let Some(l) = &p.limits {
            writeln!(t, "limits = {{ {} }}", limits(l, ", ")).unwrap();
        }
        let params = p.params.iter().map(|(k, v)| format!("{k} = {}", v.toml()));
        if p.params_table {
            writeln!(t, "[plugin.params]").unwrap();
            for line in params {
                writeln!(t, "{line}").unwrap();
            }
        } else {
            let inline: Vec<String> = params.collect();
            writeln!(t, "params = {{ {} }}", inline.join(", ")).unwrap();
        }
    }
    writeln!(t, "[sink]\npath = {}", q(&m.sink)).unwrap();
    if let Some(o) = m.overwrite {
        writeln!(t, "overwrite = {o}").unwrap();
    }
    t
}

fn with_overrides(mut l: Limits, o: &BTreeMap<usize, u64>) -> Limits {
    for (&k, &v) in o {
        match LIMIT_KEYS[k].0 {
            "memory-mib" => l.memory_mib = v,
            "max-output-batches" => l.max_output_batches = v,
            "timeout-ms" => l.timeout_ms = v,
            "max-output-rows" => l.max_output_rows = v,
            "max-output-mib" => l.max_output_mib = v,
            "log-kib" => l.log_kib = v,
            "fuel" => l.fuel = Some(v),
            "stack-kib" => l.stack_kib = v,
            "instantiate-ms" => l.instantiate_ms = v,
            other => unreachable!("{other}"),
        }
    }
    l
}

/// Checks a parsed pipeline against its model.
fn check_model(m: &PipelineModel, p: &Pipeline) -> Result<(), TestCaseError> {
    p.validate()
        .map_err(|e| TestCaseError::fail(format!("validate: {e}")))?;
    prop_assert_eq!(p.workers, m.workers);
    prop_assert_eq!(&p.source.paths, &m.paths);
    prop_assert_eq!(
        p.source.format.map(|f| format!("{f:?}").to_lowercase()),
        m.format.map(|f| FORMATS[f].to_string())
    );
    prop_assert_eq!(p.source.batch_size, m.batch_size.map(|b| b as usize));
    match (&p.partition, &m.partition) {
        (None, None) => {}
        (Some(p), Some(m)) => {
            prop_assert_eq!(&p.by, &m.by);
            prop_assert_eq!(p.count, m.count);
            prop_assert_eq!(p.scheme == quiver::pipeline::Scheme::Range, m.range);
            if !m.range {
                prop_assert_eq!(format!("{:?}", p.hash).to_lowercase(), HASHES[m.hash]);
            }
            let b = p
                .boundaries
                .as_ref()
                .map(|b| b.iter().map(|v| v.as_integer()).collect::<Vec<_>>());
            prop_assert_eq!(
                b,
                m.boundaries
                    .as_ref()
                    .map(|b| b.iter().map(|&v| Some(v)).collect())
            );
        }
        (p, m) => prop_assert!(false, "partition {:?} for {:?}", p, m),
    }
    let limits = with_overrides(Limits::default(), &m.limits);
    prop_assert_eq!(p.limits, limits);
    prop_assert_eq!(p.plugins.len(), m.plugins.len());
    for (spec, pm) in p.plugins.iter().zip(&m.plugins) {
        prop_assert_eq!(spec.label(), pm.label.clone());
        prop_assert_eq!(spec.name.is_some(), pm.by_name);
        let params = spec
            .params()
            .map_err(|e| TestCaseError::fail(format!("params: {e}")))?;
        prop_assert_eq!(params.len(), pm.params.len());
        for param in &params {
            let want = pm.params.get(&param.name);
            prop_assert!(
                want.is_some_and(|w| w.matches(&param.value)),
                "param {:?}, want {:?}",
                param,
                want
            );
        }
        let want = with_overrides(limits, pm.limits.as_ref().unwrap_or(&BTreeMap::new()));
        prop_assert_eq!(spec.limits(&p.limits).ok(), Some(want));
    }
    prop_assert_eq!(p.sink.path.to_str(), Some(m.sink.as_str()));
    prop_assert_eq!(p.sink.overwrite, m.overwrite.unwrap_or(false));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config())]

    /// Whatever a plugin returns: no panic, and an accepted output is valid Arrow with the
    /// plan's schema, the declared rows, the selected input rows in passthrough columns and the
    /// returned values in computed ones (`check_caps` and `Plan::check` agree with naive
    /// models).
    #[test]
    fn plugin_output_is_validated(case in case()) {
        let _ = output_gen::run(&case);
    }

    /// Well-formed outputs (with the slack the contract allows) are accepted, and equal the
    /// naive model.
    #[test]
    fn valid_plugin_output_is_accepted(case in valid_case(true)) {
        let result = output_gen::run(&case);
        prop_assert!(result.is_ok(), "{:?}", result.err());
    }

    /// A well-formed output with one defect is rejected. Every case gets a defect: one that
    /// does not apply to the case (no column to drop, no rows to shorten) gives way to the next
    /// in `DEFECTS`, and `ExtraColumn` applies to any case.
    #[test]
    fn one_defect_is_rejected(
        case in valid_case(false),
        first in 0..DEFECTS.len(),
        pick in any::<usize>(),
    ) {
        let (defect, broken) = (0..DEFECTS.len())
            .map(|k| DEFECTS[(first + k) % DEFECTS.len()])
            .find_map(|defect| {
                // On a copy: a defect that does not apply may still have changed the case.
                let mut broken = case.clone();
                apply_defect(&mut broken, defect, pick).then_some((defect, broken))
            })
            .expect("ExtraColumn applies to every case");
        let result = output_gen::run(&broken);
        prop_assert!(result.is_err(), "{:?} accepted: {:?}", defect, result);
    }

    /// Whatever a pipeline file says: no panic, and what is accepted agrees with naive models.
    #[test]
    fn pipeline_files_are_parsed_safely(case in file_case()) {
        file_gen::run(&case);
    }

    /// Valid pipeline files are accepted, with the values they say.
    #[test]
    fn valid_pipeline_files_parse(m in pipeline_model()) {
        let text = render_pipeline(&m);
        let p = Pipeline::from_toml(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        check_model(&m, &p)?;
    }

    /// Command-line parameters: no panic; typed TOML values are read as such, anything else
    /// as text.
    #[test]
    fn cli_params_are_parsed_safely(c in cli(), name in "[a-z][a-z0-9_-]{0,6}", p in param()) {
        file_gen::check_cli(&file_gen::render_cli(&c));
        let (n, v) = parse_cli_param(&format!("{name}={}", p.toml())).unwrap();
        prop_assert_eq!(n, name.clone());
        let v = quiver::pipeline::param_value(&name, &v).ok();
        prop_assert!(v.as_ref().is_some_and(|v| p.matches(v)), "{:?} read as {:?}", p, v);
    }
}

/// Text built mostly from what attacks paths and terminals: separators, dots, escapes,
/// bidirectional overrides, C1 controls, NUL, multi-byte characters.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("\\".to_string()),
        Just("\u{1b}[2J".to_string()),
        Just("\u{1b}]0;title\u{7}".to_string()),
        Just("\r".to_string()),
        Just("\n".to_string()),
        Just("\0".to_string()),
        Just("\u{202e}".to_string()),
        Just("\u{2066}".to_string()),
        Just("\u{9b}".to_string()),
        Just("é".to_string()),
        Just("名".to_string()),
        "[a-z0-9_-]{0,8}",
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plugin_text_never_leaves_its_directory_nor_reaches_the_terminal(
        text in prop_oneof![hostile_text(), any::<String>()],
        max in 0usize..80,
    ) {
        text_gen::check(&text, max);
        text_gen::check(&text, quiver::untrusted::MESSAGE_BYTES);
    }
}
