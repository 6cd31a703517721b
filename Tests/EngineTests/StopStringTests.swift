import Testing
import Engine

/// Feeds `deltas` to a matcher: the text emitted (plus the final flush when not stopped) and
/// whether it stopped.
private func run(_ stops: [String], _ deltas: [String]) -> (text: String, stopped: Bool, emits: [String]) {
    var matcher = StopStringMatcher(stops)
    var emits: [String] = []
    for delta in deltas {
        let (emit, stopped) = matcher.push(delta)
        emits.append(emit)
        if stopped { return (emits.joined(), true, emits) }
    }
    emits.append(matcher.finish())
    return (emits.joined(), false, emits)
}

@Suite struct StopStringTests {
    @Test func stopSplitAcrossDeltas() {
        let result = run(["lo w"], ["Hel", "lo wor", "ld"])
        #expect(result.text == "Hel")
        #expect(result.stopped)
        // "l" could start "lo w", so it is held back after the first delta.
        #expect(result.emits == ["He", "l"])
    }

    @Test func stopSplitOverManyDeltas() {
        let result = run(["<|end|>"], ["Done", "<", "|", "en", "d|", ">", "more"])
        #expect(result.text == "Done")
        #expect(result.stopped)
    }

    @Test func earliestOfSeveralStopStrings() {
        var matcher = StopStringMatcher(["world", "o w", "xyz"])
        #expect(matcher.push("Hello") == ("Hell", false))
        #expect(matcher.push(" world") == ("", true))
        #expect(matcher.matchedStop == "o w")
        #expect(matcher.stopped)
        #expect(matcher.push("more") == ("", true))
        #expect(matcher.finish() == "")
    }

    @Test func stopAtTheVeryStart() {
        #expect(run(["###"], ["###", "text"]) == ("", true, [""]))
        #expect(run(["###"], ["#", "##x"]).text == "")
    }

    @Test func nearMissesAreReleasedLater() {
        var matcher = StopStringMatcher(["STOP"])
        #expect(matcher.push("go ST") == ("go ", false))
        #expect(matcher.push("O") == ("", false))
        #expect(matcher.push("P!") == ("", true))
        var missed = StopStringMatcher(["STOP"])
        #expect(missed.push("go ST") == ("go ", false))
        #expect(missed.push("OR") == ("STOR", false))
        #expect(missed.push("ES ST") == ("ES ", false))
        #expect(missed.finish() == "ST")
    }

    @Test func overlappingPrefixKeepsTheLongestCandidate() {
        // After "xaa" both "aa" and "a" may start "aab": the longer one is held back.
        #expect(run(["aab"], ["xaa", "aab"]) == ("xaa", true, ["x", "aa"]))
        #expect(run(["aab"], ["xaa", "c"]) == ("xaac", false, ["x", "aac", ""]))
    }

    @Test func unicodeStopStrings() {
        #expect(run(["👋"], ["Hi ", "👋 there"]) == ("Hi ", true, ["Hi ", ""]))
        // A ZWJ family emoji split between its scalars.
        let family = "👨‍👩‍👧"
        #expect(run([family], ["café 👨\u{200D}", "👩\u{200D}👧", " end"]).text == "café ")
        #expect(run(["é!"], ["Résumé", "!"]).text == "Résum")
        #expect(run(["😀"], ["ok 😃", " fine"]) == ("ok 😃 fine", false, ["ok 😃", " fine", ""]))
    }

    @Test func finishFlushesHeldBackText() {
        var matcher = StopStringMatcher(["</s>"])
        #expect(matcher.push("answer </") == ("answer ", false))
        #expect(matcher.finish() == "</")
        #expect(matcher.finish() == "")
    }

    @Test func noStopStringsPassesEverythingThrough() {
        #expect(run([], ["a", "b"]) == ("ab", false, ["a", "b", ""]))
        #expect(run([""], ["a"]) == ("a", false, ["a", ""]))
    }
}
