package controlplane_test

import (
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/shared/wire"
)

type pahoMessage = paho.Message

func subscribe(dev *cptest.Device) <-chan paho.Message { return dev.Subscribe(wire.FetchResp) }
