extends Control
## The player talks to Ser Orlando Marlo: each line goes to the LmpcNpc, and his reply streams
## into the dialogue panel as the Lmpc autoload (an LmpcRuntime) works on it every frame.

var transcript := ""  # finished exchanges, as BBCode
var answering := false
var mood := ""  # his emotion at the end of his last reply
var letter_in_pack := false
var turned_away := false  # he ended the talk
@onready var orlando: LmpcNpc = $Orlando
@onready var dialogue: RichTextLabel = $Panel/Margin/Column/Dialogue
@onready var input: LineEdit = $Panel/Margin/Column/Input
@onready var status: Label = $Panel/Margin/Column/Status


func _ready() -> void:
	# Orlando loads in the background (about a second) while this scene draws: the player sees
	# how far along he is and can type once he is loaded.
	orlando.loading.connect(_show_loading)
	orlando.loaded.connect(_on_loaded)
	orlando.reply_started.connect(func() -> void: status.text = "Ser Orlando is answering...")
	orlando.reply_updated.connect(_show_reply_so_far)
	orlando.error.connect(func(message: String) -> void: status.text = message)
	orlando.emotion_changed.connect(func(label: String) -> void: mood = label)
	orlando.action_requested.connect(_on_action)
	input.text_submitted.connect(_on_line_submitted)
	# Godot 4.4+ leaves edit mode on Enter unless told otherwise; 4.2 and 4.3 have no such property
	# (nor edit mode), so it is set by name only where it exists.
	if "keep_editing_on_text_submit" in input:
		input.set("keep_editing_on_text_submit", true)
	# The NPC node became ready, and started loading, before this one (a load that fails later comes
	# through the error signal).
	input.editable = false
	if orlando.is_loaded():
		_on_loaded()
	elif orlando.is_loading():
		_show_loading("starting")
	else:
		status.text = "Ser Orlando could not be loaded: see the errors in the Output panel."


func _show_loading(stage: String) -> void:
	status.text = "Ser Orlando is on his way (%d%%: %s)..." % [roundi(100 * orlando.load_progress()), stage]


func _on_loaded() -> void:
	status.text = "Ser Orlando is listening."
	input.editable = true
	input.grab_focus()


func _on_line_submitted(line: String) -> void:
	line = line.strip_edges()
	if line.is_empty() or answering or turned_away:
		return
	input.clear()
	_keep_typing()
	transcript += "[b]You:[/b] %s\n" % _plain(line)
	dialogue.text = transcript
	if not orlando.say(line):
		return  # the error signal has put the reason in the status line
	answering = true
	var reply: String = await orlando.reply_finished
	answering = false
	transcript += "[b]Ser Orlando[/b] [i](%s)[/i]: %s\n\n" % [mood, _plain(reply)]
	dialogue.text = transcript
	if turned_away:
		status.text = "Ser Orlando has turned his back on you."
		input.editable = false
	else:
		status.text = "Ser Orlando is listening." + ("  In your pack: his father's letter." if letter_in_pack else "")


## What he does after speaking (his sheet's actions): the game's state changes here.
func _on_action(action: String, args: Dictionary) -> void:
	if action == "give_item" and args.get("item") == "father_letter":
		letter_in_pack = true
		orlando.set_fact("letter.given", "true")  # his sheet gates give_item on "not letter.given"
	elif action == "end_conversation":
		turned_away = true


func _show_reply_so_far(text: String) -> void:
	dialogue.text = transcript + "[b]Ser Orlando:[/b] " + _plain(text)


func _input(event: InputEvent) -> void:
	if answering and event.is_action_pressed("ui_cancel"):
		orlando.cancel()  # reply_finished still comes, with what he had said


## The player types the next line without clicking back into the field: focus, and on 4.4+ edit
## mode again (LineEdit.edit() does not exist before 4.4, hence the call by name).
func _keep_typing() -> void:
	input.grab_focus()
	if input.has_method("edit"):
		input.call("edit")


## Text shown as written: "[" would otherwise start a BBCode tag.
func _plain(text: String) -> String:
	return text.replace("[", "[lb]")
