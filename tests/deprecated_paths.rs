//! The 0.1 paths under `sinkwatch::sink::file` and `sinkwatch::sink::loki` still compile
//! (with a deprecation warning naming the new home, silenced here) and name the same items
//! as the flat paths at the crate root.
#![allow(deprecated)]

use std::any::TypeId;

use sinkwatch::sink::file::{
    Clock, Compression, FaultHook, FileSink, FileSinkBuilder, FileWriter, Format, FsFaultHook,
    FsOp, FsyncPolicy, ManualClock, SystemClock, TimeZone,
};
use sinkwatch::sink::loki::{Encoding, LineFormat, LokiSink, LokiSinkBuilder, LongLines};
use sinkwatch::sink::{BoxFuture, Sink};

fn same<A: ?Sized + 'static, B: ?Sized + 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

#[test]
fn the_old_file_sink_paths_name_the_flat_items() {
    assert!(same::<FileSink, sinkwatch::FileSink>());
    assert!(same::<FileSinkBuilder, sinkwatch::FileSinkBuilder>());
    assert!(same::<Compression, sinkwatch::Compression>());
    assert!(same::<FsyncPolicy, sinkwatch::FsyncPolicy>());
    assert!(same::<Format, sinkwatch::Format>());
    assert!(same::<TimeZone, sinkwatch::TimeZone>());
    assert!(same::<ManualClock, sinkwatch::ManualClock>());
    assert!(same::<SystemClock, sinkwatch::SystemClock>());
    assert!(same::<FileWriter, sinkwatch::FileWriter>());
    assert!(same::<FaultHook, sinkwatch::testing::FaultHook>());
    assert!(same::<FsFaultHook, sinkwatch::testing::FsFaultHook>());
    assert!(same::<FsOp, sinkwatch::testing::FsOp>());
    assert!(same::<dyn Clock, dyn sinkwatch::Clock>());
}

#[test]
fn the_old_loki_sink_paths_name_the_flat_items() {
    assert!(same::<LokiSink, sinkwatch::LokiSink>());
    assert!(same::<LokiSinkBuilder, sinkwatch::LokiSinkBuilder>());
    assert!(same::<Encoding, sinkwatch::Encoding>());
    assert!(same::<LineFormat, sinkwatch::LineFormat>());
    assert!(same::<LongLines, sinkwatch::LongLines>());
    assert!(same::<BoxFuture<()>, sinkwatch::BoxFuture<()>>());
    assert!(same::<dyn Sink, dyn sinkwatch::Sink>());
}

/// Code written against 0.1, unchanged: enum variants, associated functions and the unit
/// struct `SystemClock` as a value, all through the old paths.
#[test]
fn code_written_against_the_old_paths_still_builds_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(SystemClock);
    assert!(clock.now() > std::time::SystemTime::UNIX_EPOCH);
    let builder: FileSinkBuilder = FileSink::builder(dir.path())
        .compression(Compression::Gzip)
        .fsync(FsyncPolicy::Never)
        .format(Format::Text)
        .fault_hook(Ok)
        .fs_fault_hook(|op, _| {
            let _: FsOp = op;
            Ok(())
        });
    let file: FileSink = builder.build().unwrap();
    let _ = ManualClock::new(std::time::SystemTime::UNIX_EPOCH);
    let _ = TimeZone::Utc;
    assert!(Sink::id(&file).to_string().starts_with("file-"));
    file.shutdown_blocking(std::time::Duration::from_secs(5));

    let loki: LokiSink = LokiSink::builder("http://127.0.0.1:9")
        .label("service_name", "old-paths")
        .encoding(Encoding::Json)
        .line_format(LineFormat::Json)
        .long_lines(LongLines::Truncate)
        .build()
        .unwrap();
    loki.shutdown_blocking(std::time::Duration::from_millis(10));
}
